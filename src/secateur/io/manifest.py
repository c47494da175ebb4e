"""The manifest of a saved folder: what each file is (size, SHA-256), every tensor (shape, dtype, encoding),
tied aliases, masks, the plans applied, and whether transformers can load the folder. Validated field by
field before anything else is read; a damaged or hostile manifest is a :class:`ModelFileError`."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ModelFileError
from . import fs

FORMAT = "secateur.v3"
MAX_BYTES = 64 << 20
DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
ENCODINGS = ("plain", "dense", "bitmask", "dense-int8", "bitmask-int8", "ct-int8")
Count = Annotated[int, Field(ge=0, le=1 << 50)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileEntry(_Strict):
    """One file of the folder: its size and SHA-256; ``decoded_bytes`` bounds an LZMA-coded file's content."""

    bytes: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    decoded_bytes: Count | None = None


class TensorEntry(_Strict):
    """One tensor of the model: its shape and dtype, how it is stored, and (Hugging Face checkpoints) the
    sizes it had before zero padding, by dimension."""

    shape: list[Count]
    dtype: Literal[DTYPES]
    encoding: Literal[ENCODINGS]
    padded: dict[Literal["0", "1"], Count] | None = None


class HuggingFace(_Strict):
    """How transformers sees the folder: ``loadable`` with ``from_pretrained``, or why not."""

    loadable: bool
    reason: str | None = None
    padded: list[str] = []
    quantization: Literal["compressed-tensors-int8"] | None = None


class Manifest(_Strict):
    format: Literal[FORMAT]
    secateur_version: str
    kind: Literal["secateur", "huggingface"]
    model_class: str
    weights: str
    masks: str | None = None
    files: dict[str, FileEntry]
    tensors: dict[str, TensorEntry]
    tied: dict[str, str] = {}
    masked: list[str] = []
    plans: list[dict] = []
    metadata: dict = {}
    huggingface: HuggingFace | None = None

    @field_validator("files")
    @classmethod
    def _names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            fs.check_name(name, "manifest files")
        return files

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        for role, name in (("weights", self.weights), ("masks", self.masks)):
            if name is not None and name not in self.files:
                raise ValueError(f"{role} file {name!r} is not among the files listed")
        for alias, source in self.tied.items():
            if source not in self.tensors or alias in self.tensors:
                raise ValueError(f"tied tensor {alias!r} must name a stored tensor, not {source!r}")
        missing = [n for n in self.masked if n not in self.tensors]
        if missing:
            raise ValueError(f"masked tensor {missing[0]!r} is not a stored tensor")
        return self


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Validate manifest bytes (JSON, at most ``MAX_BYTES``) into a :class:`Manifest`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ModelFileError(f"{where} is not valid JSON ({str(err)[:120]}); the folder is damaged") from None
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise ModelFileError(f"{where} has format {str(data.get('format'))[:40]!r}; this secateur reads {FORMAT!r} "
                             "(save the model again with this version)")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ModelFileError(f"{where}: {field}: {first['msg'].removeprefix('Value error, ')[:200]}; the folder is "
                             "damaged or was not written by secateur") from None
    except RecursionError:
        raise ModelFileError(f"{where} is nested too deeply to be a manifest") from None


def dump_manifest(manifest: Manifest) -> bytes:
    return json.dumps(manifest.model_dump(), indent=1).encode()
