"""The run layer's planner and records, in-process: environment values and flags checked like options, the plan
of a sweep, the printed commands (bash's quoting), the comparison of a recorded plan with a new one, the lock,
and the messages for damaged records."""

import io
import os
import subprocess

import pytest
from r3f_runs.cli import run_recipe, usage_text
from r3f_runs.folder import read_json_file, run_lock
from r3f_runs.launching import plan_difference, record_plan
from r3f_runs.plan import Run
from r3f_runs.planners import make_plan
from r3f_runs.tables import HPARAMS, USER_DIR, read_table, read_table_file
from r3f_runs.values import Stop, flag_value, quoted



def inputs(tmp_path):
    data = tmp_path / "glue"
    for part in ("input0/dict.txt", "label/dict.txt"):
        (data / "RTE-bin" / part).parent.mkdir(parents=True, exist_ok=True)
        (data / "RTE-bin" / part).write_text("")
    for name in ("train.de-en.de.bin",):
        (tmp_path / "iwslt" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "iwslt" / name).write_text("")
    return {"DATA_DIR": str(data), "TINY": "1", "SEEDS": "1", "DRY_RUN": "1", "SAVE_ROOT": str(tmp_path / "runs")}


def refused(recipe, args, env):
    with pytest.raises(Stop) as stop:
        make_plan(recipe, args, env)
    return str(stop.value)


@pytest.mark.parametrize("variable", ["R3F_LAMBDA", "R3F_EPS"])
@pytest.mark.parametrize("value", ["1e400", "nan", "inf", "-1", "1.0x"])
def test_environment_numbers_are_checked_like_options(tmp_path, variable, value):
    message = refused("glue", ["RTE", "r3f"], {**inputs(tmp_path), variable: value})
    assert variable in message and value in message and "finite" in message
    assert "again" not in message


def test_every_numeric_environment_value_names_its_variable(tmp_path):
    env = inputs(tmp_path)
    assert "LAMBDAS" in refused("glue", ["RTE", "r3f"], {**env, "SWEEP": "1", "LAMBDAS": "0.1 1e400"})
    assert "DROP_LAMBDA" in refused("translation", ["iwslt14_de_en"],
                                    {**env, "DATA_BIN": str(tmp_path / "iwslt"), "DROP_LAMBDA": "1e400"})
    for variable, value in (("NGPUS", "1.5"), ("TINY_UPDATES", "0"), ("SWEEP_SIZE", "x"), ("FP16", "yes"),
                            ("TINY", "2")):
        assert variable in refused("glue", ["RTE", "r3f"], {**env, variable: value}), variable


@pytest.mark.parametrize("flags, named", [(["--lr", "nan"], "--lr"), (["--dropout=inf"], "--dropout"),
                                          (["--lr", "1e400"], "--lr"), (["--r3f-lambda", "nan"], "--r3f-lambda")])
def test_a_flag_after_method_that_is_not_finite_is_refused_without_advising_a_rerun(tmp_path, flags, named):
    message = refused("glue", ["RTE", "r3f", *flags], inputs(tmp_path))
    assert named in message and "R3F_LAMBDA=nan" not in message and "again" not in message


def test_settings_after_method_are_part_of_the_plan(tmp_path):
    plan = make_plan("glue", ["RTE", "std", "--dropout", "0.0", "--max-update", "2"], inputs(tmp_path))
    [run] = plan.runs
    assert plan.overrides == ["--dropout", "0.0", "--max-update", "2"]
    assert run.command[-4:] == ["--dropout", "0.0", "--max-update", "2"]
    assert flag_value(run.command, "--dropout") == "0.0"


def test_a_sweep_plans_every_configuration_and_seed_and_names_what_it_varies(tmp_path):
    env = {**inputs(tmp_path), "SWEEP": "1", "SEEDS": "1 2", "TINY": "0", "FP16": "0",
           "ROBERTA_PATH": __file__}
    plan = make_plan("glue", ["RTE", "r3f"], env)
    assert len(plan.runs) == 8 * 2 and len({run.dir for run in plan.runs}) == 16
    assert plan.swept == ["criterion.r3f_lambda", "criterion.noise_type"]
    assert {run.sweep_dir for run in plan.runs} == {f"{tmp_path}/runs/RTE/r3f"}
    plan = make_plan("glue", ["RTE", "std"], {**env, "SWEEP_SIZE": "3"})
    assert [run.config for run in plan.runs][::2] == ["lr5e-6", "lr1e-5", "lr3e-5"]
    assert plan.notes[-1].startswith("# SWEEP_SIZE=3: 3 of the 8 configurations")


def test_dry_run_quotes_as_bash_printf_q():
    words = ["(0.9,0.98)", "a b", "", "x=~y", "~home", "#c", "d#", "$HOME", "it's", "tab\tx", "ok-1.5e-5", "a,b"]
    bash = subprocess.run(["bash", "-c", 'printf "%q " "$@"', "bash", *words], capture_output=True, text=True).stdout
    assert quoted(words) == bash


def test_a_relaunch_with_other_settings_names_the_flag():
    recorded = ["data", "--lr", "1e-5", "--dropout", "0.1", "--fp16"]
    assert plan_difference(recorded, ["data", "--dropout", "0.1", "--lr", "0.00001", "--fp16"]) is None
    assert plan_difference(recorded, ["data", "--lr", "1e-5", "--dropout", "0.0", "--fp16"]) \
        == "--dropout: 0.1 recorded, 0.0 now"
    assert plan_difference(recorded, ["data", "--lr", "1e-5", "--dropout", "0.1"]) \
        == "--fp16: given recorded, absent now"


def test_a_second_launch_on_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    with run_lock(str(tmp_path)):
        with pytest.raises(Stop) as stop:
            with run_lock(str(tmp_path)):
                pass
    message = str(stop.value)
    assert f"pid {os.getpid()}" in message and "host" in message and "started 20" in message
    with run_lock(str(tmp_path)):  # released: a later launch takes it
        pass


def test_a_damaged_record_is_named(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"task": "RTE", ')
    with pytest.raises(Stop) as stop:
        read_json_file(str(path), "what the run is")
    assert str(path) in str(stop.value) and "damaged" in str(stop.value) and "JSONDecodeError" not in str(stop.value)


def test_plan_json_is_the_union_over_launches(tmp_path):
    def run(config, seed):
        return Run(str(tmp_path / config / f"seed{seed}"), [], {}, str(tmp_path), config, seed)

    record_plan(str(tmp_path), [run("a", 1), run("a", 2)])
    record_plan(str(tmp_path), [run("a", 2), run("b", 1)])
    plan = read_json_file(str(tmp_path / "plan.json"), "the plan")
    assert plan["runs"] == [{"dir": "a/seed1", "config": "a", "seed": 1}, {"dir": "a/seed2", "config": "a", "seed": 2},
                            {"dir": "b/seed1", "config": "b", "seed": 1}]


def test_a_wrong_invocation_prints_the_recipes_usage(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    usage = usage_text(os.path.join(os.path.dirname(USER_DIR), "recipes", "glue.sh"))
    status = run_recipe("glue", ["RTE"], inputs(tmp_path), usage=usage, stdout=out, stderr=err)
    assert status == 2 and err.getvalue().startswith("error: give a TASK and a METHOD\n\nFine-tune RoBERTa-large")


# ------------------------------------------------------------------------- the hyper-parameter tables' reader

def write_table(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_the_table_reader_skips_comments_and_blank_lines_and_keeps_every_cell(tmp_path):
    path = write_table(tmp_path / "t.tsv", ["# what the table holds", "", "name\tvalue\tsource", "   ",
                                            "lr\t1e-5\tTable 5", "# a note", "seeds\t5\t", "dropout\t0.1\tours"])
    header, rows = read_table_file(path)
    assert header == ["name", "value", "source"]
    assert rows == {"lr": {"name": "lr", "value": "1e-5", "source": "Table 5"},
                    "seeds": {"name": "seeds", "value": "5", "source": ""},
                    "dropout": {"name": "dropout", "value": "0.1", "source": "ours"}}
    assert read_table(path) == rows  # the reader by file or shipped name gives the same rows


@pytest.mark.parametrize("reader", ["read_table_file", "read_table"])
def test_a_table_with_a_key_twice_is_refused_naming_the_file_lines_and_key(tmp_path, reader):
    path = write_table(tmp_path / "t.tsv", ["# c", "name\tvalue", "lr\t1e-5", "seeds\t5", "", "lr\t2e-5"])
    with pytest.raises(ValueError) as error:
        read_table_file(path) if reader == "read_table_file" else read_table(path)
    message = str(error.value)
    assert message.startswith(f"{path}:6: ") and "'lr'" in message and "line 3" in message


@pytest.mark.parametrize("reader", ["read_table_file", "read_table"])
@pytest.mark.parametrize("row, cells", [("lr\t1e-5", 2), ("lr\t1e-5\tTable 5\textra", 4)])
def test_a_row_with_another_number_of_cells_than_the_header_is_refused(tmp_path, reader, row, cells):
    path = write_table(tmp_path / "t.tsv", ["# c", "name\tvalue\tsource", "seeds\t5\tours", row])
    with pytest.raises(ValueError) as error:
        read_table_file(path) if reader == "read_table_file" else read_table(path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: {cells} tab-separated cells") and "(line 2) has 3 columns" in message


def test_the_launcher_refuses_a_table_with_a_key_twice_instead_of_taking_one_row(tmp_path):
    """A second RTE row in glue_tasks.tsv: the recipe stops naming the file and both lines; it takes neither the
    first row nor the last without a word."""
    import shutil

    hparams = tmp_path / "hparams"
    shutil.copytree(HPARAMS, hparams)
    table = hparams / "glue_tasks.tsv"
    lines = table.read_text(encoding="utf-8").splitlines()
    [first] = [number for number, line in enumerate(lines, 1) if line.startswith("RTE\t")]
    write_table(table, lines + [lines[first - 1]])
    out, err = io.StringIO(), io.StringIO()
    status = run_recipe("glue", ["RTE", "r3f"], inputs(tmp_path), str(hparams), stdout=out, stderr=err)
    assert status == 2 and out.getvalue() == ""
    assert f"error: {table}:{len(lines) + 1}: a second row 'RTE' (the first is line {first})" in err.getvalue()


def test_every_shipped_table_has_one_row_per_key_and_one_cell_per_column():
    names = sorted(name for name in os.listdir(HPARAMS) if name.endswith(".tsv"))
    assert len(names) >= 8
    for name in names:
        header, rows = read_table_file(os.path.join(HPARAMS, name))
        assert len(header) >= 2 and rows, name


def test_the_rouge_tool_refuses_a_malformed_hparams_table_in_one_line(tmp_path, capsys):
    from fairseq_r3f.evaluation import rouge

    table = write_table(tmp_path / "summarization.tsv", ["name\tcnn_dm\tsource", "beam\t4\tBART", "beam\t5"])
    with pytest.raises(SystemExit) as stop:
        rouge.main(["--dataset", "cnn_dm", "--references", str(tmp_path / "none"), "--hparams", table])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and error.endswith(f"error: {table}:3: 2 tab-separated cells, but the header (line 1) "
                                                   f"has 3 columns: give every row one cell per column")
