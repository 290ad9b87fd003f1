"""The app as a daily tool, driven by a Pilot: one core with the CLI, safe typing, one current
run, errors that stay, a footer that keeps help and quit, remembered state."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_ldlm
from textual.widgets import Button, DataTable, Input, Select
from textual.widgets._footer import FooterKey
from tui_helpers import wait_for

from ldlm_engine import RunDir, get_preset
from ldlm_tui.app import LdlmApp
from ldlm_tui.messages import in_app_words
from ldlm_tui.screens.help import ConfirmScreen, HelpScreen, MessagesScreen
from ldlm_tui.state import load_state, state_path

pytestmark = pytest.mark.anyio
SIZES = [(80, 24), (120, 40)]
# A user config.toml that shrinks the tiny preset: the form must start from it, as the CLI does.
USER_TOML = """
[model]
d_model = 32
n_layers = 1
d_ff = 64
n_heads = 2

[train]
warmup_steps = 2
log_every = 1
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Empty LDLM_HOME, config and state folders; one torch thread (2 shared cores)."""
    import torch

    for var, sub in (
        ("LDLM_HOME", "home"),
        ("LDLM_CACHE_DIR", "cache"),
        ("LDLM_CONFIG_DIR", "config"),
        ("LDLM_STATE_DIR", "state"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "home"
    torch.set_num_threads(threads)


async def set_form(app, pilot, **values):
    pane = app.train_pane
    if "preset" in values:
        pane.query_one("#preset", Select).value = values.pop("preset")
        await pilot.pause()
    for fid, value in values.items():
        widget = pane.query_one(f"#{fid}")
        widget.value = value
    await pilot.pause()


def runs_in(home) -> list[str]:
    root = home / "runs"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def errors(app) -> list[str]:
    return [m.line() for m in app.messages if m.severity == "error"]


# ---------------------------------------------------------------- one core with `ldlm train`


async def test_app_and_cli_make_the_same_run_and_failed_starts_leave_nothing(
    home, tmp_path, monkeypatch, corpus_file
):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(USER_TOML)
    work = tmp_path / "work"
    work.mkdir()
    (work / "corpus.txt").write_text(corpus_file.read_text())
    monkeypatch.chdir(work)  # the corpus is given relative to here, in both front ends
    env = {"LDLM_CONFIG_DIR": str(config_dir), "LDLM_CACHE_DIR": str(tmp_path / "cache")}
    cli = run_ldlm(
        "train", "--data", "corpus.txt", "--preset", "tiny", "--tokenizer", "char",
        "--max-steps", "3", "--batch-size", "4", "--seq-len", "32",
        "--sample-every", "0", "--eval-every", "0", "--name", "from-cli",
        home=home, env=env, cwd=work,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    bad_cli = run_ldlm(
        "train", "--data", "nosuch.txt", "--preset", "tiny", "--name", "bad-cli",
        home=home, env=env, cwd=work,
    )  # fmt: skip
    assert bad_cli.returncode == 2 and "no such file" in bad_cli.stderr
    assert runs_in(home) == ["from-cli"]

    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        # The form starts from the preset under the user's config.toml.
        await set_form(app, pilot, preset="tiny")
        assert app.train_pane.value("lr") == "0.003"
        # A failed start, from a bad number and from a missing corpus: nothing is created,
        # and the error (in the form's words) stays on the status line and in the log.
        await set_form(app, pilot, **{"corpus": "nosuch.txt", "max-steps": "lots"})
        await pilot.press("s")
        await pilot.pause()
        assert "steps must be a whole number, got 'lots'" in errors(app)[-1]
        await set_form(app, pilot, **{"max-steps": "3"})
        await pilot.press("s")
        await wait_for(pilot, lambda: len(errors(app)) == 2 and not app.training, what="error")
        assert "no such file, folder or corpus:" in errors(app)[-1]
        assert "--data" not in errors(app)[-1]
        assert "nosuch.txt" in str(app.query_one("#status-line").render())
        assert runs_in(home) == ["from-cli"]
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, MessagesScreen) and len(app.screen.entries) == 2
        await pilot.press("escape")

        values = {
            "corpus": "corpus.txt",
            "tokenizer": "char",
            "name": "from-app",
            "max-steps": "3",
            "batch-size": "4",
            "seq-len": "32",
            "sample-every": "0",
        }
        await set_form(app, pilot, **values)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.train_state == "finished", what="the app's run")
    assert runs_in(home) == ["from-app", "from-cli"]
    from_app = json.loads((home / "runs" / "from-app" / "config.json").read_text())
    from_cli = json.loads((home / "runs" / "from-cli" / "config.json").read_text())
    assert from_app == from_cli
    assert from_app["data"]["source"] == str(work / "corpus.txt")
    assert from_app["model"]["d_model"] == 32  # the user's config.toml counted


def test_engine_wording_becomes_the_forms():
    said = in_app_words("no text; pass a text file with --data, or --max-steps N")
    assert said == 'no text; pass a text file in the corpus field, or the "steps" field N'


# ---------------------------------------------------------------- keys and focus


async def test_typing_app_keys_into_the_prompt_starts_and_switches_nothing(home):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        prompt = app.query_one("#gen-prompt", Input)
        assert app.focused is prompt, "the Generate tab puts the cursor in the prompt"
        text = "spring tgrqxpl?nm"
        await pilot.press(*text)
        await pilot.pause()
        assert prompt.value == text
        assert app.active_tab == "generate" and not app.training and app.is_running
        assert not isinstance(app.screen, (HelpScreen, ConfirmScreen, MessagesScreen))
        assert not app.train_pane.locked
        # Escape leaves the field; then letters are keys again.
        await pilot.press("escape", "r")
        assert app.active_tab == "runs"
        # Clicking the Generate tab also puts the cursor in the prompt.
        await pilot.click("#--content-tab-generate")
        await pilot.pause()
        assert app.focused is prompt
    assert runs_in(home) == []


# A small corpus and model: the trainer steps within a second or two.
SMALL = {"max-steps": "5000", "sample-every": "0", "seq-len": "32", "batch-size": "4"}


async def test_start_and_stop_from_another_tab_ask_first(home, corpus_file):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        small = {**SMALL, "corpus": str(corpus_file)}
        await set_form(app, pilot, preset="tiny", **small)
        await pilot.press("r", "s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert not app.training and runs_in(home) == []
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        stepping = lambda: app.trainer is not None and app.trainer.step > 0  # noqa: E731
        await wait_for(pilot, stepping, what="steps")
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert app.training
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: not app.training, what="stop")
        assert app.train_state == "stopped"


# ---------------------------------------------------------------- one current run


def fake_run(name: str, source: str = "builtin", **status) -> RunDir:
    cfg = get_preset("tiny")
    cfg.data.source = source
    cfg.train.max_steps = 777
    rd = RunDir.create(cfg, name=name)
    for i, loss in enumerate((4.0, 3.0)):
        rd.append_event({"event": "step", "step": (i + 1) * 10, "loss": loss})
    if status:
        rd.write_status(**status)
    rd.close()
    return rd


async def test_the_current_run_is_what_train_and_generate_show(home):
    fake_run("alpha", source="/data/plays/hamlet.txt", state="stopped", step=20)
    fake_run("beta")
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="runs")
        row = [str(c) for c in table.get_row("alpha")]
        assert "hamlet.txt" in row and "builtin" in [str(c) for c in table.get_row("beta")]
        table.move_cursor(row=table.get_row_index("alpha"))
        await pilot.press("enter")
        await pilot.pause()
        gen = app.query_one("#generate-pane")
        assert app.active_tab == "generate" and gen.run == "alpha"
        assert app.current_run == "alpha"
        pane = app.train_pane
        assert pane.locked and pane.value("name") == "alpha"
        assert pane.value("max-steps") == "777" and pane.value("corpus") == "/data/plays/hamlet.txt"
        assert pane.query_one("#max-steps", Input).disabled
        # s with a run on the form says how to make a new one; n unlocks it as a template.
        await pilot.press("escape", "t", "s")
        await pilot.pause()
        assert not app.training and "press n for a new run" in app.messages[-1].text
        await pilot.press("n")
        await pilot.pause()
        assert not pane.locked and pane.value("name") == "" and pane.value("max-steps") == "777"
        assert not pane.query_one("#max-steps", Input).disabled
        choices = pane.read_choices()
        assert choices.settings["train"] == {"max_steps": 777}


async def test_generate_follows_the_run_trained_here(home, capsys, corpus_file):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        small = {**SMALL, "corpus": str(corpus_file), "name": "live"}
        await set_form(app, pilot, preset="tiny", **small)
        await pilot.press("escape", "s")
        pane = app.train_pane
        await wait_for(pilot, lambda: app.trainer is not None and app.trainer.step > 0, what="step")
        await wait_for(pilot, lambda: pane.state == "training", what="training state")
        assert app.query_one("#generate-pane").run == "live"
        assert pane.locked and pane.value("name") == "live"
        await pilot.press("p")
        await wait_for(pilot, lambda: pane.state == "paused", what="paused")
        assert str(pane.query_one("#pause", Button).label) == "Resume"
        await pilot.press("p")
        await wait_for(pilot, lambda: pane.state == "training", what="training again")
        assert str(pane.query_one("#pause", Button).label) == "Pause"
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("s")  # the quit dialog: stop with a checkpoint
        await wait_for(pilot, lambda: not app.is_running, what="exit")
    said = capsys.readouterr().err  # what the shell shows after the app closes
    assert "stopped run live at step" in said and "ldlm train --resume live" in said


async def test_a_mistyped_run_name_gets_a_suggestion(home):
    fake_run("shakespeare-small")
    app = LdlmApp(watch="shakespear-small")  # (a prefix, "shakespeare-sm", would open it)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "did you mean shakespeare-small?" in errors(app)[-1]


async def test_damaged_runs_show_why(home):
    fake_run("good")
    bad = home / "runs" / "broken"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{not json")
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="runs")
        table.move_cursor(row=table.get_row_index("broken"))
        await pilot.pause()
        hint = str(app.query_one("#runs-hint").render())
        assert "broken is damaged:" in hint


# ---------------------------------------------------------------- footer and help


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
async def test_footer_always_shows_help_and_quit(home, size):
    def shown() -> set[str]:
        width = app.size.width
        return {
            k.key_display
            for k in app.screen.query(FooterKey)
            if k.region.width and k.region.right <= width
        }

    app = LdlmApp()
    async with app.run_test(size=size) as pilot:
        for tab in ("t", "r", "g"):
            await pilot.press("escape", tab)
            await pilot.pause(0.2)
            keys = shown()
            if isinstance(app.focused, Input):  # ? and q type there: their other keys show
                assert {"f1", "^q"} <= keys, (tab, keys)
            else:
                assert {"?", "q"} <= keys, (tab, keys)


async def test_help_has_a_generate_section_with_the_colour_legend(home):
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(s.text for s in app.screen._compositor.render_strips())
        assert "Generate tab" in text and "[MASK*N]" in text
        assert "masked" in text and "confidence" in text


# ---------------------------------------------------------------- remembered state


async def test_theme_and_form_are_remembered_and_a_damaged_state_is_ignored(home):
    app = LdlmApp(remember=True)
    async with app.run_test(size=(80, 24)) as pilot:
        app.theme = "gruvbox"
        await set_form(app, pilot, preset="tiny", corpus="nosuch.txt", **{"max-steps": "123"})
        await pilot.press("s")  # remembered even though this start fails
        await wait_for(pilot, lambda: not app.training and errors(app), what="error")
    assert load_state()["theme"] == "gruvbox"
    app = LdlmApp(remember=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == "gruvbox"
        pane = app.train_pane
        assert (pane.value("preset"), pane.value("corpus"), pane.value("max-steps")) == (
            "tiny",
            "nosuch.txt",
            "123",
        )
    state_path().write_text('{"theme": ["not", "a", "name"], "form": 7')
    assert load_state() == {}
    app = LdlmApp(remember=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        from ldlm_tui.screens.train import starting_values

        assert app.train_pane.value("max-steps") == starting_values(None)["max-steps"] != "123"
    assert os.listdir(state_path().parent) == [state_path().name]  # no temporary files left


def test_a_collapsed_sample_is_recognised():
    from ldlm_engine.prompts import repeated_token

    prompt = [1, 2, 3]
    spaces = prompt + [7] * 10
    assert repeated_token(spaces, [True] * 3 + [False] * 10) == (7, 1.0)
    lively = [*prompt, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7]
    assert repeated_token(lively, [True] * 3 + [False] * 10) is None
    tail = [*prompt, 4, 5, 6, 8, 9, 7, 7, 7, 7, 7]  # ends in a run of half the sample
    assert repeated_token(tail, [True] * 3 + [False] * 10) == (7, 0.5)


async def test_the_form_offers_the_engines_processes_and_block_size(home):
    from ldlm_engine.config import PROCESSES
    from ldlm_engine.plans import build_run_config

    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.train_pane
        process = pane.query_one("#process", Select)
        assert [v for _, v in process._options if v is not Select.NULL] == list(PROCESSES)
        await set_form(app, pilot, preset="seed", process="mask")  # not block by default
        assert not pane.query_one("#field-block-size").display
        await set_form(app, pilot, process="block")
        assert pane.query_one("#field-block-size").display
        await set_form(app, pilot, **{"block-size": "4", "seq-len": "32"})
        choices = pane.read_choices()
        assert choices.process == "block" and choices.settings["process"] == {"block_size": 4}
        cfg = build_run_config(choices)
        assert (cfg.process.kind, cfg.process.block_size, cfg.model.seq_len) == ("block", 4, 32)
        await set_form(app, pilot, **{"block-size": "5"})
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: errors(app) and not app.training, what="an error")
        assert "block (5) must divide seq len (32)" in errors(app)[-1]
        assert "process.block_size" not in errors(app)[-1]
    assert runs_in(home) == []


async def test_the_palette_suggests_a_run_for_a_mistyped_name(home):
    from textual.command import CommandList

    fake_run("shakespeare-small")
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"shakespeare-smol")

        def suggested() -> list[str]:
            options = app.screen.query_one(CommandList).options
            return [str(o.prompt) for o in options if "did you mean" in str(o.prompt)]

        await wait_for(pilot, suggested, timeout=10, what="a suggestion")
        assert "shakespeare-small" in suggested()[0]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_run == "shakespeare-small", what="opened")


async def test_resuming_a_finished_run_says_how_to_extend_it(home):
    fake_run("done", state="finished", step=20)
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="runs")
        await pilot.press("R")
        await wait_for(pilot, lambda: errors(app) and not app.training, what="an error")
        said = errors(app)[-1]
        assert "already finished" in said and "ldlm train --resume done --max-steps N" in said
        assert not app.train_pane.query_one("#start", Button).disabled


@pytest.mark.parametrize("process", ["mask", "ar", "uniform"])
async def test_the_seed_preset_trains_from_the_form_with_every_process(home, process, corpus_file):
    """The seed preset's time embedding belongs to the uniform process: the form can pick any
    process with it and the run trains, evaluates and samples (issue 13)."""
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await set_form(app, pilot, preset="seed")
        app.train_pane.query_one("#process", Select).value = process
        await pilot.pause()
        values = {
            "corpus": str(corpus_file),
            "name": f"seed-{process}",
            "max-steps": "2",
            "batch-size": "2",
            "seq-len": "16",
            "sample-every": "2",
        }
        await set_form(app, pilot, **values)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.train_state == "finished", 120, "the seed run")
    assert not errors(app)
    events = [json.loads(x) for x in (home / "runs" / f"seed-{process}" / "metrics.jsonl")
              .read_text().splitlines()]  # fmt: skip
    kinds = {e["event"] for e in events}
    assert {"eval", "sample"} <= kinds, kinds
    cfg = json.loads((home / "runs" / f"seed-{process}" / "config.json").read_text())
    assert cfg["process"]["kind"] == process
    assert cfg["model"]["time_embedding"] == (process == "uniform")
