"""Registries: registering, creating and listing encoders, and plugins by entry point."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import siamkit
from siamkit.encoders import encoder_registry
from siamkit.exceptions import ConfigError, UnknownComponentError
from siamkit.registry import Registry

BUILTIN_ENCODERS = {"compact", "conv4", "tutorial", "resnet", "mlp", "efficientnet-lite0"}


class _Linear(siamkit.Encoder):
    def __init__(self, dim: int = 3, input_dim: int = 5):
        super().__init__()
        self.embedding_dim = dim
        self.fc = nn.Linear(input_dim, dim)

    def forward(self, x):
        return self.fc(x)


def test_builtins_are_listed():
    names = siamkit.list_encoders()
    assert set(names) >= BUILTIN_ENCODERS
    assert names == sorted(names)
    assert "compact" in encoder_registry
    assert encoder_registry.get("mlp") is siamkit.MLPEncoder
    assert encoder_registry.name_of(siamkit.CompactCNN) == "compact"
    assert siamkit.ResNetEncoder.registry_name == "resnet"


def test_register_create_and_list(clean_encoder_registry):
    decorated = siamkit.register_encoder("test-linear")(_Linear)
    assert decorated is _Linear
    assert "test-linear" in siamkit.list_encoders()
    encoder = siamkit.create_encoder("test-linear", dim=7)
    assert isinstance(encoder, _Linear)
    assert encoder.embedding_dim == 7
    assert encoder(torch.zeros(2, 5)).shape == (2, 7)
    assert encoder.get_config() == {"dim": 7, "input_dim": 5}


def test_register_bare_decorator_uses_lower_case_name(clean_encoder_registry):
    @siamkit.register_encoder
    class TestBareEncoderXYZ(_Linear):
        pass

    assert encoder_registry.get("testbareencoderxyz") is TestBareEncoderXYZ
    assert siamkit.create_encoder("testbareencoderxyz").embedding_dim == 3


def test_registry_name_attribute_is_used_and_not_inherited(clean_encoder_registry):
    @siamkit.register_encoder
    class Parent(_Linear):
        registry_name = "test-parent-name"

    @siamkit.register_encoder
    class TestChildXYZ(Parent):
        pass

    assert encoder_registry.get("test-parent-name") is Parent
    assert encoder_registry.get("testchildxyz") is TestChildXYZ  # not the parent's name


def test_duplicate_name_is_an_error(clean_encoder_registry):
    with pytest.raises(ConfigError, match="already registered"):
        siamkit.register_encoder("compact")(_Linear)
    assert encoder_registry.get("compact") is siamkit.CompactCNN
    # registering the same class again under its name is harmless
    siamkit.register_encoder("compact")(siamkit.CompactCNN)
    assert encoder_registry.get("compact") is siamkit.CompactCNN


def test_overwrite_replaces(clean_encoder_registry):
    siamkit.register_encoder("test-over")(_Linear)

    class Other(_Linear):
        pass

    with pytest.raises(ConfigError):
        siamkit.register_encoder("test-over")(Other)
    siamkit.register_encoder("test-over", overwrite=True)(Other)
    assert encoder_registry.get("test-over") is Other


def test_non_encoder_is_refused(clean_encoder_registry):
    class NotAnEncoder(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="subclass"):
        siamkit.register_encoder("test-module")(NotAnEncoder)
    with pytest.raises(ConfigError):
        siamkit.register_encoder("test-function")(lambda: None)
    assert "test-module" not in encoder_registry._classes
    assert "test-function" not in encoder_registry._classes


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownComponentError) as info:
        siamkit.create_encoder("no-such-encoder")
    message = str(info.value)
    assert "no-such-encoder" in message
    for name in BUILTIN_ENCODERS:
        assert name in message
    assert "siamkit.encoders" in message  # how to add one
    assert not message.startswith("'")  # not quoted like a KeyError
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, siamkit.SiamkitError)


def test_empty_registry_says_none():
    registry = Registry("widget", group="siamkit.test.no-such-group")
    assert registry.names() == []
    with pytest.raises(UnknownComponentError, match="known: none"):
        registry.get("x")


def _write_distribution(site: Path, dist: str, module: str, source: str, entry_points: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


_PLUGIN_SOURCE = """
    import torch
    import siamkit

    class PluginEncoder(siamkit.Encoder):
        def __init__(self, embedding_dim: int = 4):
            super().__init__()
            self.embedding_dim = embedding_dim
            self.fc = torch.nn.Linear(6, embedding_dim)

        def forward(self, x):
            return self.fc(x)
"""


def test_plugin_found_through_entry_point(tmp_path, monkeypatch, clean_encoder_registry):
    name = "test-plugin-encoder"
    assert name not in encoder_registry._classes
    _write_distribution(
        tmp_path,
        "siamkit-test-plugin",
        "siamkit_test_plugin_ok",
        _PLUGIN_SOURCE,
        f"""
        [siamkit.encoders]
        {name} = siamkit_test_plugin_ok:PluginEncoder
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    encoder_registry.reload_plugins()

    assert name in siamkit.list_encoders()
    encoder = siamkit.create_encoder(name, embedding_dim=3)
    assert type(encoder).__name__ == "PluginEncoder"
    assert encoder.embed(torch.zeros(2, 6)).shape == (2, 3)
    # a plugin encoder saves and loads by its entry-point name
    loaded = siamkit.load_encoder(encoder.save(tmp_path / "model"))
    assert type(loaded) is type(encoder)
    assert loaded.fingerprint() == encoder.fingerprint()


def test_broken_plugin_only_warns(tmp_path, monkeypatch, clean_encoder_registry):
    _write_distribution(
        tmp_path,
        "siamkit-test-plugin-mixed",
        "siamkit_test_plugin_mixed",
        _PLUGIN_SOURCE,
        """
        [siamkit.encoders]
        test-plugin-good = siamkit_test_plugin_mixed:PluginEncoder
        test-plugin-missing-class = siamkit_test_plugin_mixed:NoSuchClass
        test-plugin-missing-module = siamkit_test_plugin_nowhere:Encoder
        test-plugin-not-an-encoder = siamkit_test_plugin_mixed:torch
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning) as records:
        encoder_registry.reload_plugins()
    messages = " ".join(str(r.message) for r in records)
    for broken in (
        "test-plugin-missing-class",
        "test-plugin-missing-module",
        "test-plugin-not-an-encoder",
    ):
        assert broken in messages
    assert "test-plugin-good" not in messages
    # the good one of the same package still works, and siamkit's own are untouched
    names = siamkit.list_encoders()
    assert "test-plugin-good" in names
    assert "test-plugin-missing-class" not in names
    assert set(names) >= BUILTIN_ENCODERS
    assert siamkit.create_encoder("test-plugin-good").embedding_dim == 4


def test_plugin_cannot_shadow_a_builtin(tmp_path, monkeypatch, clean_encoder_registry):
    _write_distribution(
        tmp_path,
        "siamkit-test-plugin-shadow",
        "siamkit_test_plugin_shadow",
        _PLUGIN_SOURCE,
        """
        [siamkit.encoders]
        compact = siamkit_test_plugin_shadow:PluginEncoder
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    encoder_registry.reload_plugins()
    assert encoder_registry.get("compact") is siamkit.CompactCNN
