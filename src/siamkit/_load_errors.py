"""What to quote of a ``torch.load`` failure: the reason, never torch's advice to run the file.

torch's refusal of a pickle that would run code is a page of advice whose
first option is to retry with ``weights_only=False`` (or to allowlist the
class), which would run the payload. siamkit quotes only the reason.
"""

from __future__ import annotations

import re

#: Sentences of torch's refusal that tell the user how to load the file anyway.
_ADVICE = re.compile(
    r"weights_only|weights only load failed|safe_globals|if you trust|trusted source|"
    r"you have two options|check the documentation|recommended steps",
    re.IGNORECASE,
)
_PREFIX = "WeightsUnpickler error:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_error_reason(err: BaseException, limit: int = 200) -> str:
    """One line on why ``torch.load`` failed, with torch's load-it-anyway advice left out.

    Examples:
        >>> refusal = (
        ...     "Weights only load failed. Re-running `torch.load` with `weights_only` set to "
        ...     "`False` will likely succeed, but it can result in arbitrary code execution.\\n"
        ...     "\\tWeightsUnpickler error: Unsupported global: GLOBAL posix.mkdir was not an "
        ...     "allowed global by default. Please use `torch.serialization.add_safe_globals"
        ...     "([posix.mkdir])` to allowlist this global if you trust this class/function.")
        >>> load_error_reason(RuntimeError(refusal))
        'a pickled object that would run code (Unsupported global: GLOBAL posix.mkdir was not an allowed global by default); siamkit never runs one'
        >>> load_error_reason(EOFError("Ran out of input"))
        'Ran out of input'
    """  # noqa: E501
    text = _ANSI.sub("", str(err))
    refusal = "weights only load failed" in text.lower()
    kept = []
    for line in text.splitlines():
        line = line.strip().removeprefix(_PREFIX).strip()
        sentences = [s for s in re.split(r"(?<=\.)\s+", line) if s and not _ADVICE.search(s)]
        if sentences:
            kept.append(" ".join(sentences).rstrip("."))
    reason = kept[0] if kept else type(err).__name__
    if len(reason) > limit:
        reason = reason[: limit - 3] + "..."
    if refusal:
        return f"a pickled object that would run code ({reason}); siamkit never runs one"
    return reason
