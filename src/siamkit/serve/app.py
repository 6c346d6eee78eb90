"""The face-search REST app (FastAPI): galleries, people and faces, identify, embed.

Every failure answers one JSON shape, ``{"error": {"code", "message"}}``, never
a traceback. Model calls run in FastAPI's thread pool, so the event loop never
waits on them; an enrolment is saved before it is answered.

Examples:
    >>> import tempfile, siamkit
    >>> from fastapi.testclient import TestClient
    >>> encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    >>> app = create_app(encoder, tempfile.mkdtemp())
    >>> with TestClient(app) as client:
    ...     client.get("/health").json()
    {'status': 'ok'}
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which
# name dependencies local to create_app, at definition time.

import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from siamkit.exceptions import (
    ConfigError,
    EmptyIndexError,
    KeyFileError,
    NoFaceError,
    SiamkitError,
)
from siamkit.index.calibration import pair_distances
from siamkit.serve.batching import EmbeddingBatcher
from siamkit.serve.faces import locate_face
from siamkit.serve.galleries import Galleries, GalleryError, GalleryInfo
from siamkit.serve.keys import NAME_PATTERN, ApiKey, KeyFile, authenticate, check_name
from siamkit.serve.metrics import CONTENT_TYPE, ServiceMetrics
from siamkit.serve.schemas import (
    CalibrationOut,
    CalibrationRequest,
    DetectedFace,
    Detection,
    Embedding,
    Enrolment,
    ErrorResponse,
    GalleryOut,
    Identification,
    Match,
    NewGallery,
    PairVerification,
    People,
    Person,
    Readiness,
)
from siamkit.serve.uploads import UploadError, UploadLimits, decode_upload
from siamkit.thresholds import accepts

#: Gallery and person names in paths: the schema says what a plain name is.
Name = Annotated[str, Path(pattern=NAME_PATTERN)]


class ServeError(SiamkitError):
    """A request the service refuses: :attr:`code` and :attr:`status` go to the client."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.status = code, status


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 415, 422)
}


def create_app(
    encoder: Any,
    root: str | os.PathLike,
    keys: KeyFile | None = None,
    *,
    threshold: float | None = None,
    limits: UploadLimits | None = None,
) -> FastAPI:
    """The service over the galleries in ``root``, embedding with ``encoder``.

    Args:
        encoder: The model (``siamkit.load_encoder(M)``).
        root: The galleries' folder, locked to this app from now until it shuts down.

    Raises:
        ConfigError: another server holds ``root``.
        keys: The API keys; None lets every request in (a loopback service).
        threshold: The 1:1 threshold new galleries start with (the model's trained one).
        limits: Upload limits; :class:`UploadLimits` by default.
    """
    limits = limits or UploadLimits()
    galleries = Galleries(root, encoder, threshold)  # refused now if another server holds it
    batcher = EmbeddingBatcher(encoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        try:
            yield
        finally:
            await batcher.close()
            galleries.close()

    app = FastAPI(title="siamkit face search", lifespan=lifespan, responses=ERRORS)
    app.state.galleries, app.state.batcher = galleries, batcher
    _error_handlers(app)
    access = _access(keys)
    _metrics(app, galleries, access)
    _routes(app, access, limits)
    return app


def _metrics(app: FastAPI, galleries: Galleries, access: Callable[[str], Any]) -> None:
    """``GET /metrics`` and the middleware that counts every answer by its route template."""
    metrics = ServiceMetrics(galleries.sizes)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Any]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "(no route)")  # templates: the label set stays small
        metrics.observe(template, request.method, response.status_code,
                        time.perf_counter() - started)  # fmt: skip
        return response

    @app.get("/metrics", response_class=Response)
    def prometheus(_: Annotated[Any, access("admin")]) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _access(keys: KeyFile | None) -> Callable[[str], Any]:
    """A dependency factory: ``access(action)`` checks the request's key for ``action``.

    The key comes in ``X-API-Key`` or ``Authorization: Bearer``; both are declared as
    security schemes, so ``/docs`` offers to send one.
    """
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
    bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")

    def access(action: str) -> Any:
        def check(
            request: Request,
            x_api_key: Annotated[str | None, Security(header)] = None,
            token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
        ) -> ApiKey | None:
            if keys is None:
                return None
            presented = x_api_key or (token.credentials if token is not None else None)
            if not presented:
                raise ServeError("unauthorized", "send an API key: 'Authorization: Bearer "
                                 "<key>' or 'X-API-Key: <key>'", 401)  # fmt: skip
            key = authenticate(keys.load(), presented)
            if key is None:
                raise ServeError("unauthorized", "this API key is not valid (wrong or "
                                 "revoked)", 401)  # fmt: skip
            gallery = request.path_params.get("gallery")
            if not key.allows(action, gallery):
                where = f" on the gallery {gallery!r}" if gallery else ""
                raise ServeError("forbidden", f"this key ({key.role}) may not {action}{where}",
                                 403)  # fmt: skip
            return key

        return Depends(check)

    return access


def _routes(app: FastAPI, access: Callable[[str], Any], limits: UploadLimits) -> None:
    def galleries() -> Galleries:
        return app.state.galleries

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/galleries", response_model=list[GalleryOut])
    def list_galleries(key: Annotated[ApiKey | None, access("query")]) -> list[GalleryOut]:
        names = [n for n in galleries().names() if key is None or key.allows("query", n)]
        return [_gallery_out(n, galleries()) for n in names]

    @app.post("/galleries", status_code=201, response_model=GalleryOut)
    def create_gallery(body: NewGallery, _: Annotated[Any, access("admin")]) -> GalleryOut:
        return GalleryOut(**vars(galleries().create(body.name)))

    @app.get("/galleries/{gallery}", response_model=GalleryOut)
    def gallery_info(gallery: Name, _: Annotated[Any, access("query")]) -> GalleryOut:
        return _gallery_out(gallery, galleries())

    @app.delete("/galleries/{gallery}", status_code=204)
    def delete_gallery(gallery: Name, _: Annotated[Any, access("admin")]) -> None:
        galleries().delete(gallery)

    @app.get("/ready", response_model=Readiness)
    def ready() -> Readiness:
        return Readiness(ready=True, galleries=len(galleries().names()))

    @app.post("/galleries/{gallery}/calibrate", response_model=CalibrationOut)
    def calibrate(gallery: Name, body: CalibrationRequest,
                  _: Annotated[Any, access("admin")]) -> CalibrationOut:  # fmt: skip
        with galleries().changing(gallery) as index:
            fit = index.calibrate(target_far=body.target_far, target_fpir=body.target_fpir)
        details = fit.to_dict()
        return CalibrationOut(kind="1:N" if body.target_fpir is not None else "1:1",
                              threshold=details.pop("threshold"), reliable=details.pop("reliable"),
                              warnings=details.pop("warnings"), details=details)  # fmt: skip

    _people_routes(app, access, limits)
    _query_routes(app, access, limits)
    _verify_routes(app, access, limits)
    _page_routes(app)


#: The page's files and their types; everything it loads comes from this server.
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
               "frame-ancestors 'none'; form-action 'self'")  # fmt: skip


def _page_routes(app: FastAPI) -> None:
    """The web page at ``/`` (no key needed to load it: its API calls send the key)."""
    from importlib.resources import files

    page = files("siamkit.serve") / "page"

    def answer(name: str) -> Response:
        headers = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}  # fmt: skip
        return Response((page / name).read_bytes(), media_type=PAGE_FILES[name], headers=headers)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return answer("index.html")

    @app.get("/page/{name}", include_in_schema=False)
    def page_file(name: str) -> Response:
        if name not in PAGE_FILES or name == "index.html":
            raise ServeError("not_found", f"the page has no file {name!r}", 404)
        return answer(name)


def _people_routes(app: FastAPI, access: Callable[[str], Any], limits: UploadLimits) -> None:
    def galleries() -> Galleries:
        return app.state.galleries

    @app.post("/galleries/{gallery}/people/{person}/faces", status_code=201,
              response_model=Enrolment)  # fmt: skip
    async def enrol(gallery: Name, person: Name,
                    files: Annotated[list[UploadFile], File(min_length=1)],
                    _: Annotated[Any, access("enrol")]) -> Enrolment:  # fmt: skip
        vectors = await _vectors(app, await _pictures(files, limits))
        ids = await _in_thread(galleries().enrol, gallery, person, vectors)
        return Enrolment(gallery=gallery, person=person, face_ids=ids)

    @app.get("/galleries/{gallery}/people", response_model=People)
    def people(gallery: Name, _: Annotated[Any, access("enrol")],
               offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> People:  # fmt: skip
        index = galleries().get(gallery)
        labels = [str(label) for label in index.labels()]
        page = [Person(name=n, faces=len(index.ids(label=n))) for n in labels[offset:][:limit]]
        return People(people=page, total=len(labels), offset=offset)

    @app.delete("/galleries/{gallery}/people/{person}", status_code=204)
    def delete_person(gallery: Name, person: Name, _: Annotated[Any, access("enrol")]) -> None:
        galleries().remove_person(gallery, person)

    @app.delete("/galleries/{gallery}/faces/{face_id}", status_code=204)
    def delete_face(gallery: Name, face_id: str, _: Annotated[Any, access("enrol")]) -> None:
        galleries().remove_face(gallery, face_id)


def _query_routes(app: FastAPI, access: Callable[[str], Any], limits: UploadLimits) -> None:
    @app.post("/galleries/{gallery}/identify", response_model=Identification)
    async def identify(gallery: Name, file: Annotated[UploadFile, File()],
                       _: Annotated[Any, access("query")],
                       k: Annotated[int, Query(ge=1, le=100)] = 5) -> Identification:  # fmt: skip
        index = app.state.galleries.get(gallery)
        ((vector, face),) = await _embedded(app, await _pictures([file], limits))
        found = await _in_thread(_identify, index, vector, k)
        return found.model_copy(update={"face": None if face is None else _detected(face)})

    @app.post("/embed", response_model=Embedding)
    async def embed(
        file: Annotated[UploadFile, File()], _: Annotated[Any, access("query")]
    ) -> Embedding:
        (vector,) = await _vectors(app, await _pictures([file], limits))
        return Embedding(embedding=[float(v) for v in vector],
                         metric=app.state.galleries.encoder.metric)  # fmt: skip


def _verify_routes(app: FastAPI, access: Callable[[str], Any], limits: UploadLimits) -> None:
    @app.post("/verify", response_model=PairVerification)
    async def verify(a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
                     _: Annotated[Any, access("query")]) -> PairVerification:  # fmt: skip
        first, second = await _vectors(app, await _pictures([a, b], limits))
        galleries = app.state.galleries
        return _verify(galleries.encoder.metric, first, [second], galleries.threshold)

    @app.post("/galleries/{gallery}/verify", response_model=PairVerification)
    async def verify_person(gallery: Name, file: Annotated[UploadFile, File()],
                            person: Annotated[str, Form(pattern=NAME_PATTERN)],
                            _: Annotated[Any, access("query")]) -> PairVerification:  # fmt: skip
        index = app.state.galleries.get(gallery)
        faces = [index.get(i).embedding for i in index.ids(label=person)]
        if not faces:
            raise GalleryError(f"no person {person!r} in the gallery {gallery!r}", 404)
        (vector,) = await _vectors(app, await _pictures([file], limits))
        return _verify(index.metric, vector, faces, index.threshold)

    @app.post("/detect", response_model=Detection)
    async def detect(file: Annotated[UploadFile, File()],
                     _: Annotated[Any, access("query")]) -> Detection:  # fmt: skip
        (picture,) = await _pictures([file], limits)
        aligner = getattr(app.state.galleries.encoder, "aligner", None)
        if aligner is None or not hasattr(aligner, "find_faces"):
            raise ServeError("no_detector", "this model has no face aligner to detect with", 409)
        faces = await _in_thread(aligner.find_faces, picture)
        return Detection(faces=[_detected(face) for face in faces])


def _verify(metric: str, query: Any, others: list[Any], threshold: float | None
            ) -> PairVerification:  # fmt: skip
    """``query`` against ``others`` (embeddings): the nearest decides, by the one rule."""
    stacked = np.asarray(others, dtype=np.float32)
    distances = pair_distances(np.repeat(query[None], len(stacked), 0), stacked, metric)
    distance = float(distances.min())
    if threshold is None:
        return PairVerification(decision="uncalibrated", distance=distance, threshold=None)
    decision = "same" if accepts(distance, threshold) else "different"
    return PairVerification(decision=decision, distance=distance, threshold=threshold)


def _detected(face: Any) -> DetectedFace:
    marks = None if face.landmarks is None else [[float(x), float(y)] for x, y in face.landmarks]
    return DetectedFace(box=[float(v) for v in face.box], landmarks=marks, score=float(face.score))


def _gallery_out(name: str, galleries: Galleries) -> GalleryOut:
    return GalleryOut(**vars(GalleryInfo.of(name, galleries.get(name))))


async def _pictures(files: list[UploadFile], limits: UploadLimits) -> list[Any]:
    if len(files) > limits.max_files:
        raise UploadError("too_large", f"{len(files)} images in one request, above the limit "
                          f"of {limits.max_files}", 413)  # fmt: skip
    pictures, total = [], 0
    for upload in files:
        data = await upload.read(limits.max_file_bytes + 1)
        total += len(data)
        if total > limits.max_request_bytes:
            raise UploadError("too_large", f"the request's images pass {limits.max_request_bytes} "
                              "bytes", 413)  # fmt: skip
        pictures.append(decode_upload(data, upload.filename or "the upload", limits))
    return pictures


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def _identify(index: Any, picture: Any, k: int) -> Identification:
    if not len(index):
        return Identification(decision="unknown", match=None, threshold=index.search_threshold,
                              candidates=[])  # fmt: skip
    found = index.search(picture, k=k)
    candidates = [Match(person=str(m.label), face_id=str(m.id), distance=m.distance)
                  for m in found]  # fmt: skip
    threshold = index.search_threshold
    if threshold is None:
        return Identification(decision="uncalibrated", match=None, threshold=None,
                              candidates=candidates)  # fmt: skip
    best = index.identify(picture, threshold=threshold)
    match = None if best is None else Match(person=str(best.label), face_id=str(best.id),
                                            distance=best.distance)  # fmt: skip
    return Identification(decision="unknown" if match is None else "match", match=match,
                          threshold=threshold, candidates=candidates)  # fmt: skip


async def _vectors(app: FastAPI, pictures: list[Any]) -> list[Any]:
    """The pictures' embeddings, batched with other requests'; no face: ``no_face``."""
    return [vector for vector, _ in await _embedded(app, pictures)]


async def _embedded(app: FastAPI, pictures: list[Any]) -> list[tuple[Any, Any]]:
    """Each picture's embedding and the face it was cut from (one detection pass)."""
    encoder = app.state.galleries.encoder
    found = await _in_thread(lambda: [locate_face(encoder, p) for p in pictures])
    vectors = await app.state.batcher.embed_many([f.model_input for f in found])
    return [(vector, f.face) for vector, f in zip(vectors, found, strict=True)]


_NAMED = {"name": "gallery name", "gallery": "gallery name", "person": "person name"}
_STATUS = {NoFaceError: ("no_face", 422), EmptyIndexError: ("empty_gallery", 409),
           KeyFileError: ("keys_file", 500), ConfigError: ("bad_request", 400)}  # fmt: skip


def _error_handlers(app: FastAPI) -> None:
    def answer(code: str, message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.exception_handler(ServeError)
    @app.exception_handler(UploadError)
    async def refused(request: Request, err: Any) -> JSONResponse:
        return answer(err.code, str(err), err.status)

    @app.exception_handler(GalleryError)
    async def gallery(request: Request, err: GalleryError) -> JSONResponse:
        return answer("not_found" if err.status == 404 else "conflict", str(err), err.status)

    @app.exception_handler(SiamkitError)
    async def siamkit_error(request: Request, err: SiamkitError) -> JSONResponse:
        code, status = next((v for t, v in _STATUS.items() if isinstance(err, t)),
                            ("unprocessable", 422))  # fmt: skip
        return answer(code, str(err), status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid')}"
        if first.get("type") == "string_pattern_mismatch":  # a name: say what a name is
            try:
                check_name(first.get("input"), _NAMED.get(str(first["loc"][-1]), "name"))
            except ConfigError as named:
                message = str(named)
        return answer("invalid_request", message, 422)

    @app.exception_handler(HTTPException)
    async def http(request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        refused = answer(code, str(err.detail), err.status_code)
        refused.headers.update(err.headers or {})
        if err.status_code == 405:  # Starlette names only the first route's methods
            refused.headers["Allow"] = ", ".join(_allowed(app, request))
        return refused

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        return answer("internal", f"internal error ({type(err).__name__}); the server's log "
                      "has the details", 500)  # fmt: skip


def _allowed(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of ``request``'s path answers (RFC 9110's ``Allow``)."""
    from starlette.routing import Match as RouteMatch

    methods: set[str] = set()
    for route in app.router.routes:
        matched, _ = route.matches(request.scope)
        if matched != RouteMatch.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
