"""Every error code of corral's API maps to its class with its details
(no daemon needed)."""

from __future__ import annotations

import json

import pytest

import corral_client as cc
from corral_client.errors import error_from_body

# (code, status, details, class, attributes to check) for each row of the
# README's error table.
CASES = [
    ("invalid_input", 400, {"reason": "r"}, cc.InvalidInput, {"reason": "r"}),
    ("invalid_manifest", 400, {"file": "plugin.toml", "key": "plugin.colour", "reason": "unknown"},
     cc.InvalidManifest, {"file": "plugin.toml", "key": "plugin.colour"}),
    ("invalid_policy", 400, {"file": "p", "key": "k", "reason": "r"}, cc.InvalidPolicy,
     {"key": "k"}),
    ("invalid_config", 400, {"file": "c", "key": "k", "reason": "r"}, cc.InvalidConfig,
     {"file": "c"}),
    ("invalid_package", 400, {"reason": "r"}, cc.InvalidPackage, {"reason": "r"}),
    ("dependency_missing", 400, {"dependency": "d", "requirement": "^1"}, cc.DependencyMissing,
     {"dependency": "d", "requirement": "^1"}),
    ("permission_denied", 403, {"permission": "net"}, cc.PermissionDenied,
     {"permission": "net"}),
    ("plugin_not_found", 404, {"plugin": "p"}, cc.PluginNotFound, {"plugin": "p"}),
    ("not_loaded", 409, {"plugin": "p"}, cc.NotLoaded, {"plugin": "p"}),
    ("already_exists", 409, {"plugin": "p", "installed_version": "1.0.0",
                             "installed_digest": "ab"}, cc.AlreadyExists,
     {"installed_version": "1.0.0", "installed_digest": "ab"}),
    ("version_in_use", 409, {"plugin": "p", "version": "1.0.0", "needed_by": ["app"]},
     cc.VersionInUse, {"version": "1.0.0", "needed_by": ["app"]}),
    ("quarantined", 409, {"plugin": "p", "failures": 5, "window_ms": 60000}, cc.Quarantined,
     {"failures": 5, "window_ms": 60000}),
    ("plugin_error", 422, {"plugin_code": "bad_csv"}, cc.PluginError,
     {"plugin_code": "bad_csv"}),
    ("overloaded", 429, {"limit": 64}, cc.Overloaded, {"limit": 64}),
    ("cancelled", 499, {}, cc.Cancelled, {}),
    ("internal", 500, {}, cc.Internal, {}),
    ("feature_unavailable", 501, {"feature": "landlock_net"}, cc.FeatureUnavailable,
     {"feature": "landlock_net"}),
    ("crashed", 502, {"signal": 11, "signal_name": "SIGSEGV"}, cc.Crashed,
     {"signal": 11, "signal_name": "SIGSEGV", "exit_code": None}),
    ("memory_limit_exceeded", 502, {"limit_bytes": 64 << 20, "peak_bytes": 70 << 20},
     cc.MemoryLimitExceeded, {"limit_bytes": 64 << 20, "limit_mb": 64, "used_mb": 70}),
    ("pids_limit_exceeded", 502, {"limit": 8}, cc.PidsLimitExceeded, {"limit": 8}),
    ("seccomp_violation", 502, {"syscall": "socket"}, cc.SeccompViolation,
     {"syscall": "socket"}),
    ("protocol_violation", 502, {"reason": "garbled"}, cc.ProtocolViolation,
     {"reason": "garbled"}),
    ("sandbox_setup_failed", 502, {"step": "landlock", "errno": 22}, cc.SandboxSetupFailed,
     {"step": "landlock", "errno": 22}),
    ("shutting_down", 503, {}, cc.ShuttingDown, {}),
    ("timeout", 504, {"limit_ms": 250}, cc.Timeout, {"limit_ms": 250}),
    ("start_timeout", 504, {"limit_ms": 5000}, cc.StartTimeout, {"limit_ms": 5000}),
]


def body(code: str, details: dict, message: str = "what happened") -> bytes:
    return json.dumps({"error": {"code": code, "message": message, **details}}).encode()


def test_every_code_has_a_case():
    assert sorted(c[0] for c in CASES) == sorted(cc.BY_CODE)


@pytest.mark.parametrize("code, status, details, cls, attrs", CASES, ids=[c[0] for c in CASES])
def test_each_code_is_its_class_with_its_details(code, status, details, cls, attrs):
    e = error_from_body(status, body(code, details))
    assert type(e) is cls
    assert isinstance(e, cc.CorralError)
    assert (e.code, e.status, e.message, e.details) == (code, status, "what happened", details)
    for name, value in attrs.items():
        assert getattr(e, name) == value, name
    assert str(e) == f"{code}: what happened"


def test_deaths_share_a_base_class():
    died = {cls for cls in cc.BY_CODE.values() if issubclass(cls, cc.PluginDied)}
    assert died == {cc.Crashed, cc.MemoryLimitExceeded, cc.PidsLimitExceeded,
                    cc.SeccompViolation, cc.ProtocolViolation}


def test_an_unknown_code_is_a_plain_corral_error_keeping_it():
    e = error_from_body(418, body("teapot", {"spout": 1}))
    assert type(e) is cc.CorralError
    assert (e.code, e.details) == ("teapot", {"spout": 1})


@pytest.mark.parametrize("raw", [b"", b"<html>bad gateway</html>", b'{"error": 3}', b"[1]"])
def test_an_answer_not_in_corrals_shape_is_quoted(raw):
    e = error_from_body(502, raw)
    assert type(e) is cc.CorralError and e.code == "http_error" and e.status == 502
    assert raw[:20].decode() in e.message
