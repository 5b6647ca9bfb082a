"""The framework-neutral core: import hygiene, registry behaviour, completeness."""
import subprocess
import sys
from pathlib import Path

import pytest

import rsport
from rsport import tolerances
from rsport.registry import ModelSpec, register, resolve

ROOT = Path(__file__).resolve().parents[1]
# Modules in torch_ref/models that are building blocks of registered models, not models.
BUILDING_BLOCKS = {"__init__", "resnet", "resnet_v1c", "semantic_fpn"}


def test_core_imports_no_framework():
    code = ("import sys, importlib, pkgutil, rsport\n"
            "for m in pkgutil.iter_modules(rsport.__path__): importlib.import_module('rsport.' + m.name)\n"
            "rsport.names()\n"
            "bad = [f for f in ('torch', 'paddle') if f in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError) as err:
        rsport.get("facseg50")
    assert "unknown model 'facseg50'; known: factseg50" in str(err.value)


def test_double_registration_raises():
    """Another spec under a taken name is refused (registering the very same spec again, as a
    re-imported module does, is a no-op)."""
    import dataclasses

    spec = rsport.get("factseg50")
    assert register(spec) is spec
    with pytest.raises(ValueError, match="registered twice"):
        register(dataclasses.replace(spec, summary="another"))


def test_spec_rejects_wrong_normalisation_length():
    spec = rsport.get("factseg50")
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__}
    with pytest.raises(ValueError, match="mean/std need 3 values"):
        ModelSpec(**{**fields, "mean": (1.0, 2.0)})


@pytest.mark.parametrize("name", rsport.names())
def test_spec_is_complete(name):
    spec = rsport.get(name)
    for entry in (spec.torch_entry, spec.paddle_entry, spec.torch_loss, spec.paddle_loss):
        assert callable(resolve(entry)), f"{name}: cannot import {entry}"
    tolerances.get(spec.tolerance)
    assert spec.eval_outputs and spec.train_outputs, f"{name}: name the outputs of eval and train mode"
    assert spec.all_rules()[-1].name == "same_name", f"{name}: model rules must come before COMMON_RULES"
    assert (ROOT / "tests" / "data" / f"{name}_original_keys.json").is_file(), (
        f"{name}: add tests/data/{name}_original_keys.json, the key list of the ORIGINAL code")
    assert spec.export_input_spec() == [None, spec.in_channels, None, None]


def test_every_model_file_is_registered():
    used = {rsport.get(n).torch_entry.split(":")[0].rsplit(".", 1)[1] for n in rsport.names()}
    files = {p.stem for p in (ROOT / "torch_ref" / "models").glob("*.py")}
    orphans = files - used - BUILDING_BLOCKS
    assert not orphans, (f"model files without a registry entry: {sorted(orphans)}; register them in "
                         f"rsport/zoo.py or list them as building blocks in this test")


def test_every_torch_model_file_has_a_paddle_twin():
    torch_files = {p.name for p in (ROOT / "torch_ref" / "models").glob("*.py")}
    paddle_files = {p.name for p in (ROOT / "paddle_impl" / "models").glob("*.py")}
    assert torch_files == paddle_files


@pytest.mark.parametrize("name", sorted(tolerances.PROFILES))
def test_tolerance_profiles_record_calibration(name):
    profile = tolerances.get(name)
    assert len(profile.calibration) > 40  # says what it was calibrated on
    assert profile.atol >= 0 and profile.rtol >= 0
    assert (profile.atol == profile.rtol == 0) == (name == "exact")
