"""The adapter contract (`anti_i2v.contract`) on every registered family, and on a user's module.

One parametrised fixture gives each family's tiny adapter; every check of the contract runs on
each. A new family registered in `anti_i2v.models.backbones` is covered without a line here.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import EVERY_FAMILY
from typer.testing import CliRunner

from anti_i2v.cli import app
from anti_i2v.contract import (
    CHECKS,
    ContractError,
    check_layout,
    check_lens,
    check_schedule,
    run_contract,
)
from anti_i2v.models.backbones import FAMILIES, TINY, TINY_SIZES, load_backbone


@pytest.fixture(params=EVERY_FAMILY)
def adapter(request, backbones):
    """Each registered family's adapter on its tiny model (built once per session)."""
    return backbones(request.param)


# plan's check runs one protect step twice (fake and real tensors): seconds, not milliseconds
@pytest.mark.parametrize(
    "check",
    [pytest.param(c, marks=pytest.mark.slow) if c.name == "plan" else c for c in CHECKS],
    ids=[c.name for c in CHECKS],
)
def test_every_family_keeps_the_contract(adapter, check):
    detail = check.run(adapter)
    assert detail and "\n" not in detail


@pytest.mark.slow  # the whole contract once, on a tiny model
def test_a_broken_layout_and_a_wrong_target_fail_their_checks(monkeypatch):
    backbone = load_backbone("tiny:wan")
    # A layout that reads the tokens backwards keeps the shape and loses the positions
    layout = type(backbone).layout
    monkeypatch.setattr(type(backbone), "layout", lambda self, h, c: layout(self, h.flip(1), c))
    with pytest.raises(ContractError, match="misplaces tokens"):
        check_layout(backbone)
    monkeypatch.undo()
    # A target with the sign of Open-Sora's velocity on a diffusers flow model
    monkeypatch.setattr(type(backbone), "target", lambda self, x0, n, t: x0 - n)
    with pytest.raises(ContractError, match="misses x0"):
        check_schedule(backbone)
    # A pass-on that scrambles the stream (the head norms away scale and shift): the last-but-one block's lens is not the model cut there
    monkeypatch.setattr(type(backbone), "lens_pass_on", lambda self, left, a, k: left.flip(1))
    with pytest.raises(ContractError, match="lens_pass_on does not hand on"):
        check_lens(backbone)
    monkeypatch.undo()
    monkeypatch.setattr(type(backbone), "target", lambda self, x0, n, t: x0 - n)
    outcomes = run_contract(backbone)
    assert [o.check for o in outcomes] == [c.name for c in CHECKS]
    assert [o.check for o in outcomes if not o.passed] == ["schedule"]


USER_ADAPTER = '''
"""A user's family: tiny Wan 2.1 I2V under a name of its own."""
from anti_i2v.models.backbones.wan import Wan, tiny  # noqa: F401

TINY_SIZE = ((32, 32), 9)


class MyWan(Wan):
    family = "my-wan"
'''


@pytest.fixture
def registry():
    """The family registry as it was before the test (a user's module registers into it)."""
    saved = [(d, dict(d)) for d in (FAMILIES, TINY, TINY_SIZES)]
    yield
    for d, copy in saved:
        d.clear()
        d.update(copy)


@pytest.mark.slow  # the whole contract, plan included, through the CLI
def test_models_check_runs_the_contract_on_a_users_module(tmp_path, monkeypatch, registry):
    (tmp_path / "my_adapter.py").write_text(textwrap.dedent(USER_ADAPTER))
    monkeypatch.syspath_prepend(str(tmp_path))
    res = CliRunner().invoke(app, ["models", "--check", "my_adapter"])
    assert res.exit_code == 0, res.output
    assert "my-wan" in res.output and res.output.count("pass") >= len(CHECKS)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "exactly one concrete Backbone subclass"),
        ("from anti_i2v.models.backbones.wan import Wan\nclass A(Wan):\n    family = 'a'\n", "tiny(seed)"),
        ("import no_such_package_here\n", "cannot import it"),
        ("from anti_i2v.models.backbones.wan import Wan, tiny\nTINY_SIZE = ((32, 32), 9)\n"
         "class W(Wan):\n    pass\n", "is built in"),
    ],
)  # fmt: skip
def test_a_bad_adapter_module_is_refused_in_one_line(tmp_path, source, message, registry):
    path = tmp_path / "bad_adapter.py"
    path.write_text(source)
    res = CliRunner().invoke(app, ["models", "--check", str(path)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
