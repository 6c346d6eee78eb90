// The siamkit face-search page: plain JavaScript over the service's REST API, no build step.
// Names and messages from the server are written with textContent only (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 100; // people per page
const state = { key: sessionStorage.getItem("siamkit-key") || "", offset: 0, enrolFiles: [] };

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = {};
  if (state.key) headers["X-API-Key"] = state.key;
  const options = { method, headers };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => ({ error: { code: "bad_answer",
    message: `the server answered ${response.status} without JSON` } }));
  if (!response.ok) {
    const error = answer.error || { code: "error", message: String(response.status) };
    throw new Error(`${error.message} (${error.code})`);
  }
  return answer;
}

const gallery = () => $("gallery").value;
const galleryPath = (rest) => `galleries/${encodeURIComponent(gallery())}${rest}`;

async function run(action) {
  try {
    await action();
  } catch (error) {
    say(error.message, true);
  }
}

async function connect(event) {
  if (event) event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("siamkit-key", state.key);
  await run(async () => {
    await loadGalleries(sessionStorage.getItem("siamkit-gallery"));
    say(`connected: ${$("gallery").options.length} galleries`);
  });
}

async function loadGalleries(chosen) {
  const galleries = await api("GET", "galleries");
  const select = $("gallery");
  select.replaceChildren(...galleries.map((g) => {
    const option = document.createElement("option");
    option.value = g.name;
    option.textContent = `${g.name} (${g.people} people, ${g.faces} faces)`;
    return option;
  }));
  if (chosen && galleries.some((g) => g.name === chosen)) select.value = chosen;
  state.offset = 0;
  await loadPeople();
}

async function createGallery(event) {
  event.preventDefault();
  const name = $("new-gallery").value.trim();
  if (!name) return say("give the new gallery a name", true);
  await run(async () => {
    await api("POST", "galleries", { name });
    $("new-gallery").value = "";
    await loadGalleries(name);
    sessionStorage.setItem("siamkit-gallery", name);
    say(`created the gallery ${name}`);
  });
}

async function loadPeople() {
  const body = $("people");
  if (!gallery()) {
    body.replaceChildren();
    $("people-total").textContent = "no gallery yet";
    return;
  }
  const page = await api("GET", galleryPath(`/people?offset=${state.offset}&limit=${PAGE}`));
  body.replaceChildren(...page.people.map((person) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = person.name;
    const faces = document.createElement("td");
    faces.textContent = String(person.faces);
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.dataset.person = person.name;
    remove.addEventListener("click", () => deletePerson(person.name));
    const cell = document.createElement("td");
    cell.append(remove);
    row.append(name, faces, cell);
    return row;
  }));
  const last = Math.min(page.offset + page.people.length, page.total);
  $("people-total").textContent = page.total
    ? `${page.offset + 1}-${last} of ${page.total} people` : "nobody enrolled yet";
  pager(page);
}

function pager(page) {
  const holder = $("people-total");
  for (const [label, offset] of [["previous", page.offset - PAGE], ["next", page.offset + PAGE]]) {
    if (offset < 0 || offset >= page.total) continue;
    const button = document.createElement("button");
    button.textContent = label;
    button.addEventListener("click", () => run(async () => { state.offset = offset; await loadPeople(); }));
    holder.append(" ", button);
  }
}

async function deletePerson(name) {
  if (!confirm(`Delete ${name} and all their faces from ${gallery()}?`)) return;
  await run(async () => {
    await api("DELETE", galleryPath(`/people/${encodeURIComponent(name)}`));
    say(`deleted ${name}`);
    await loadPeople();
  });
}

function dropZone(zone, take) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    take([...event.dataTransfer.files].filter((file) => file.type.startsWith("image/")));
  });
}

function chooseEnrolFiles(files) {
  state.enrolFiles = files;
  $("enrol-chosen").textContent = files.length ? `${files.length} photo(s) chosen` : "";
}

async function enrol(event) {
  event.preventDefault();
  const person = $("person").value.trim();
  if (!gallery()) return say("create or pick a gallery first", true);
  if (!person || !state.enrolFiles.length) return say("give a name and at least one photo", true);
  const form = new FormData();
  for (const file of state.enrolFiles) form.append("files", file, file.name);
  await run(async () => {
    const done = await api("POST", galleryPath(`/people/${encodeURIComponent(person)}/faces`), form);
    say(`enrolled ${done.face_ids.length} face(s) of ${done.person}`);
    chooseEnrolFiles([]);
    $("enrol-files").value = "";
    await loadPeople();
  });
}

async function search(file) {
  if (!file) return;
  if (!gallery()) return say("create or pick a gallery first", true);
  const form = new FormData();
  form.append("file", file, file.name || "photo.png");
  await run(async () => {
    const found = await api("POST", galleryPath("/identify?k=5"), form);
    await showResults(file, found);
    say(found.decision === "match" ? `found ${found.match.person}` : `searched: ${found.decision}`);
  });
}

async function showResults(file, found) {
  const results = $("results");
  const main = card(found.decision === "match" ? "match" : "unknown");
  main.id = "result";
  main.append(await faceCrop(file, found.face));
  line(main, found.decision === "match" ? found.match.person : found.decision, "decision");
  if (found.match) line(main, `distance ${found.match.distance.toFixed(4)}`);
  if (found.threshold !== null) line(main, `threshold ${found.threshold.toFixed(4)}`);
  const others = found.candidates.map((candidate, rank) => {
    const other = card("candidate");
    line(other, `${rank + 1}. ${candidate.person}`, "person");
    line(other, `distance ${candidate.distance.toFixed(4)}`);
    line(other, `face ${candidate.face_id}`);
    return other;
  });
  results.replaceChildren(main, ...others);
}

function card(kind) {
  const element = document.createElement("div");
  element.className = `card ${kind}`;
  return element;
}

function line(parent, text, className) {
  const element = document.createElement("div");
  element.textContent = text;
  if (className) element.className = className;
  parent.append(element);
}

async function faceCrop(file, face) {
  // The searched face with a margin, its box drawn; the whole photo when there is no box.
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  let [left, top, width, height] = [0, 0, bitmap.width, bitmap.height];
  if (face) {
    const [l, t, r, b] = face.box;
    const margin = 0.25 * Math.max(r - l, b - t);
    left = Math.max(0, l - margin);
    top = Math.max(0, t - margin);
    width = Math.min(bitmap.width, r + margin) - left;
    height = Math.min(bitmap.height, b + margin) - top;
  }
  const canvas = document.createElement("canvas");
  canvas.className = "face";
  canvas.width = Math.max(1, Math.round(width));
  canvas.height = Math.max(1, Math.round(height));
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, left, top, width, height, 0, 0, canvas.width, canvas.height);
  if (face) {
    const [l, t, r, b] = face.box;
    context.strokeStyle = "#0c0";
    context.lineWidth = Math.max(2, canvas.width / 100);
    context.strokeRect(l - left, t - top, r - l, b - t);
  }
  return canvas;
}

async function startCamera() {
  await run(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    $("video").srcObject = stream;
    $("camera").hidden = false;
  });
}

function snap() {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => search(new File([blob], "webcam.png", { type: "image/png" })), "image/png");
}

window.addEventListener("DOMContentLoaded", () => {
  $("key").value = state.key;
  $("key-form").addEventListener("submit", connect);
  $("new-gallery-form").addEventListener("submit", createGallery);
  $("gallery").addEventListener("change", () => run(async () => {
    sessionStorage.setItem("siamkit-gallery", gallery());
    state.offset = 0;
    await loadPeople();
  }));
  $("enrol-form").addEventListener("submit", enrol);
  $("enrol-files").addEventListener("change", (event) => chooseEnrolFiles([...event.target.files]));
  dropZone($("enrol-drop"), chooseEnrolFiles);
  $("search-file").addEventListener("change", (event) => search(event.target.files[0]));
  dropZone($("search-drop"), (files) => search(files[0]));
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $("webcam").hidden = false; // the browser allows it here (a secure context)
    $("webcam").addEventListener("click", startCamera);
    $("snap").addEventListener("click", snap);
  }
  connect();
});
