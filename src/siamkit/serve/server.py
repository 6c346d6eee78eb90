"""Running the service: ``siamkit serve --model M --index DIR`` (uvicorn).

Examples:
    >>> check_bind("127.0.0.1", keys=None)
    >>> check_bind("0.0.0.0", keys=None)
    Traceback (most recent call last):
    ...
    siamkit.exceptions.ConfigError: ...
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from siamkit.exceptions import ConfigError
from siamkit.serve.keys import KeyFile


def check_bind(host: str, keys: KeyFile | None) -> None:
    """Refuse an address other machines reach unless the service has API keys.

    Raises:
        ConfigError: ``host`` is not a loopback address and ``keys`` is None.
    """
    if keys is not None or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"--host {host} lets other machines in: give --keys FILE (make keys with "
            "`siamkit serve keys add`), or serve on 127.0.0.1"
        )


def serve(
    model: str | os.PathLike,
    root: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys: str | os.PathLike | None = None,
) -> None:
    """Serve the galleries in ``root`` with the model ``model`` until stopped.

    Raises:
        ConfigError: a non-loopback ``host`` without ``keys``.
        MissingExtraError: the serve extra is not installed.
    """
    from siamkit import load_encoder
    from siamkit.model_folder import trained_threshold
    from siamkit.serve import create_app

    key_file = None if keys is None else KeyFile(keys)
    check_bind(host, key_file)
    if key_file is not None:
        key_file.load()  # a malformed keys file is refused before the server starts
    encoder = load_encoder(model)
    app = create_app(encoder, Path(root), key_file, threshold=trained_threshold(model))
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
