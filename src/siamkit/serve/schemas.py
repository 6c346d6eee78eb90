"""The service's request and response bodies (pydantic), as the OpenAPI schema shows them."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from siamkit.serve.keys import NAME_PATTERN


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """The one shape of every failure."""

    error: ErrorBody


class GalleryOut(BaseModel):
    name: str
    faces: int
    people: int
    threshold: float | None
    identify_threshold: float | None


class NewGallery(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)


class Enrolment(BaseModel):
    gallery: str
    person: str
    face_ids: list[str]


class Person(BaseModel):
    name: str
    faces: int


class People(BaseModel):
    people: list[Person]
    total: int
    offset: int


class DetectedFace(BaseModel):
    box: list[float]  # left, top, right, bottom, in the upright photo's pixels
    landmarks: list[list[float]] | None
    score: float


class Match(BaseModel):
    person: str
    face_id: str
    distance: float


class Identification(BaseModel):
    decision: str  # "match", "unknown", or "uncalibrated" (no threshold to decide with)
    match: Match | None
    threshold: float | None
    candidates: list[Match]
    face: DetectedFace | None = None  # the face searched for (None: the model has no detector)


class Embedding(BaseModel):
    embedding: list[float]
    metric: str


class PairVerification(BaseModel):
    decision: str  # "same", "different", or "uncalibrated" (no threshold to decide with)
    distance: float
    threshold: float | None


class Detection(BaseModel):
    faces: list[DetectedFace]


_ONE_OF_TWO = {"minProperties": 1, "maxProperties": 1}


class CalibrationRequest(BaseModel):
    """Exactly one of the two: a false-accept rate (1:1, verify) or an FPIR (1:N, identify)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_OF_TWO)

    target_far: float = Field(None, gt=0, lt=1)  # type: ignore[assignment]
    target_fpir: float = Field(None, gt=0, lt=1)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_target(self) -> "CalibrationRequest":
        if (self.target_far is None) == (self.target_fpir is None):
            raise ValueError("give exactly one of target_far (1:1) and target_fpir (1:N)")
        return self


class CalibrationOut(BaseModel):
    kind: str  # "1:1" or "1:N"
    threshold: float
    reliable: bool
    warnings: list[str]
    details: dict[str, Any]


class Readiness(BaseModel):
    ready: bool
    galleries: int
