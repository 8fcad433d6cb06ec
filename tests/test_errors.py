"""The error hierarchy and the command line's handling of it: one line, a status, a traceback only on --debug."""

import pytest

from omni_lab import cli
from omni_lab.errors import CheckpointError, ConfigError, GGUFError, InputError, OmniLabError


def test_hierarchy_names_file_and_field():
    e = ConfigError("must be at least 1, got 0", path="ckpt/config.json", field="num_hidden_layers")
    assert str(e) == "ckpt/config.json: num_hidden_layers: must be at least 1, got 0"
    assert (e.path.name, e.field) == ("config.json", "num_hidden_layers")
    assert isinstance(e, InputError) and isinstance(e, ValueError) and isinstance(e, OmniLabError)
    assert issubclass(GGUFError, CheckpointError)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert cli.main(["generate", "--model", str(tmp_path / "nope"), "--prompt-ids", "1,2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(tmp_path / "nope") in err


def test_cli_debug_raises(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        cli.main(["--debug", "generate", "--model", str(tmp_path / "nope"), "--prompt-ids", "1,2"])


def test_cli_calls_anything_else_a_bug(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_doctor", broken)
    assert cli.main(["doctor"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "ZeroDivisionError" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "doctor"])


@pytest.mark.parametrize("flag", [["--max-new-tokens", "0"], ["--max-new-tokens", "-3"], ["--top-p", "0"],
                                  ["--temperature", "nan"], ["--top-k", "0"]])
def test_cli_ranges_are_usage_errors(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--model", str(tmp_path), "--prompt-ids", "1", *flag])
    assert e.value.code == 2 and flag[0] in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing", "not a checkpoint"])
def test_prompt_with_a_wrong_model_names_the_model_not_the_tokenizer(tmp_path, capsys, where):
    model = tmp_path / "m"
    if where == "not a checkpoint":
        model.mkdir()
        (model / "notes.txt").write_text("hello")
    assert cli.main(["generate", "--model", str(model), "--prompt", "hello"]) == 2
    err = capsys.readouterr().err
    assert f"{model}: not a checkpoint directory" in err or f"{model}: no config.json" in err, err


def test_prompt_with_no_tokenizer_files_says_so(tmp_path, capsys):
    from omni_lab.models.tiny import build_tiny_qwen3

    model = build_tiny_qwen3(tmp_path / "m", seed=1)
    for f in model.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "chat_template")):
            f.unlink()
    assert cli.main(["generate", "--model", str(model), "--prompt", "hello"]) == 2
    assert "no tokenizer files" in capsys.readouterr().err


def test_generated_control_characters_are_shown_escaped():
    from omni_lab.text import printable

    assert printable("a\x07b\x1b[2Jc\n\td\u00e9") == "a\\x07b\\x1b[2Jc\n\td\u00e9"
