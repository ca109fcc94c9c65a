"""Shared fixtures: the built-in toy task, binarised once per session, and a runner for fairseq's CLIs.

Also the test tiers. ``make test-fast`` runs ``pytest -m "not slow"``: unit and property tests that run in the
test process (they may use the binarised toy task). Tests marked ``slow`` are end-to-end (they start fairseq's
console scripts, a recipe or one of the plugin's tools in a subprocess) or long (LONG_TESTS). ``make test`` runs
all of them.
"""

import os
import subprocess

import pytest
import torch

from fairseq_r3f.logs import read_json_log
from fairseq_r3f.tools import fairseq_command
from r3f_runs.tables import tiny_model_flags
from fairseq_r3f.toy_data import write_toy_task

# On a pytest-xdist worker (`make test`) the workers share the cores: one intra-op thread each, for the tests
# that compute in this process and for the processes they start (most set OMP_NUM_THREADS=1 themselves).
# Measured on 2 cores, two workers: the in-process property tests take 28 s instead of 34 s.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_r3f")

# A RoBERTa, and a BART, small enough to train for a few updates on the CPU in about a second: the tiny
# models of the recipes' TINY=1 (fairseq_r3f/hparams/tiny.tsv).
TINY_ROBERTA = [*tiny_model_flags("roberta"), "--max-positions", "64"]
TINY_BART = tiny_model_flags("seq2seq")
NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0", "--pooler-dropout", "0"]


def _cpu_half_layer_norm() -> bool:
    try:
        torch.nn.functional.layer_norm(torch.ones(2, 4, dtype=torch.float16), (4,))
    except RuntimeError:
        return False
    return True


# Half-precision forwards of a whole model on the CPU: torch 1.13 and 2.1 lack the fp16 LayerNorm kernel there.
needs_cpu_fp16 = pytest.mark.skipif(not _cpu_half_layer_norm(), reason=(
    f"torch {torch.__version__} has no fp16 LayerNorm on the CPU ('LayerNormKernelImpl' not implemented for "
    f"'Half'): the test needs a torch that has it (2.13 has; 1.13 and 2.1 do not)"))


def _loads_weights_only_by_default() -> bool:
    import fractions
    import io

    buffer = io.BytesIO()
    torch.save({"x": fractions.Fraction(1, 3)}, buffer)  # a class no allow-list holds
    buffer.seek(0)
    try:
        torch.load(buffer)
    except Exception:
        return True
    return False


# torch.load's weights-only default (torch >= 2.6): older torch loads any pickle, so there is no safety to keep on.
needs_weights_only_default = pytest.mark.skipif(not _loads_weights_only_by_default(), reason=(
    f"torch {torch.__version__} loads checkpoints with weights_only=False by default: no weights-only safety to "
    f"test (it is the default from torch 2.6)"))
needs_unsafe_globals_scan = pytest.mark.skipif(
    not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"),
    reason=f"torch {torch.__version__} has no torch.serialization.get_unsafe_globals_in_checkpoint (torch >= 2.5)")


# fairseq 0.12.2's encoder layers hold BetterTransformer copies of their weights as parameters of the layer itself
# (layers.N.in_proj_weight: q/k/v concatenated; out_proj_*, fc1_*, fc2_*). Training never uses them, and loading
# a checkpoint re-derives them from the real weights: a resumed model has them filled, an uninterrupted one still
# has their zero initialisation. Comparisons of models leave them out (and say so); later fairseqs have none.
BETTER_TRANSFORMER_COPIES = {f"{name}_{kind}" for name in ("in_proj", "out_proj", "fc1", "fc2")
                             for kind in ("weight", "bias")}


def real_weights(state):
    """(the tensors of a model state dict without fairseq 0.12.2's BetterTransformer copies, the names left out)."""
    left_out = sorted(k for k in state if k.rsplit(".", 1)[-1] in BETTER_TRANSFORMER_COPIES)
    return {k: v for k, v in state.items() if k not in left_out}, left_out


def run_fairseq(tool, args, check=True):
    """Runs fairseq-<tool> with the plugin; returns (completed process, json log records by tag)."""
    proc = subprocess.run(
        fairseq_command("fairseq-" + tool) + args, capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc, read_json_log(proc.stdout + proc.stderr)


def train_args(data_bin, save_dir, *extra, arch="roberta_base", criterion="sentence_prediction_r3f"):
    """fairseq-train flags for the toy task; ``extra`` comes last so a test can override anything."""
    model = TINY_BART if arch.startswith("bart") else TINY_ROBERTA
    task = ["--add-prev-output-tokens"] if arch.startswith("bart") else []
    return [
        data_bin, "--user-dir", USER_DIR, "--task", "sentence_prediction", "--num-classes", "2",
        "--init-token", "0", "--separator-token", "2", "--max-positions", "64", "--arch", arch, *model, *task,
        "--criterion", criterion, "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
        "--batch-size", "16", "--required-batch-size-multiple", "1", "--max-update", "10",
        "--log-format", "json", "--log-interval", "1", "--save-dir", save_dir, "--cpu", "--seed", "1",
        "--no-epoch-checkpoints", "--num-workers", "0", *extra,
    ]


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy")), n_train=256, n_valid=64)


@pytest.fixture(scope="session")
def toy_pair_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy_pairs")), n_train=256, n_valid=64, pairs=True)


@pytest.fixture(scope="session")
def toy_regression_task(tmp_path_factory):
    return write_toy_task(str(tmp_path_factory.mktemp("toy_reg")), n_train=256, n_valid=63, regression=True)


def build_in_process(data_bin, *extra, arch="roberta_base", criterion="sentence_prediction_r3f"):
    """The task, model and criterion fairseq-train would build from the same flags, in this process."""
    from fairseq import options, tasks

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, train_args(data_bin, "/nonexistent", *extra, arch=arch,
                                                          criterion=criterion))
    task = tasks.setup_task(args)
    model = task.build_model(args)
    return task, model, task.build_criterion(args)


def first_batch(task, split="valid", max_sentences=16):
    """A collated batch of the split's first ``max_sentences`` examples, in dataset order."""
    task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(min(max_sentences, len(dataset)))])


# -- test tiers ---------------------------------------------------------------------------------------------------

# Modules whose tests start processes (fairseq-train, fairseq-hydra-train, recipes, python -m tools): every test
# in them is marked slow, except the in-process ones named in IN_PROCESS_TESTS. Tests of other modules run in the
# fast tier; a new module of end-to-end tests belongs here.
END_TO_END_MODULES = {
    "test_adversarial", "test_benchmark", "test_demo", "test_export", "test_glue_recipes", "test_gpu_check",
    "test_hf_example", "test_hydra", "test_launch_runs",
    "test_install", "test_option_checks", "test_options_help", "test_packaging", "test_preprocess_data",
    "test_probing", "test_probing_runs", "test_r4f_and_checkpoints", "test_results_runs", "test_rouge",
    "test_run_folder_safety", "test_runs",
    "test_sentence_prediction_r3f", "test_summarization_pipeline", "test_translation", "test_xnli",
}
IN_PROCESS_TESTS = {
    "test_adversarial": {
        "test_smart_perturbation_beats_random_noise_of_same_norm",
        "test_freelb_perturbation_beats_random_noise_of_same_norm", "test_freelb_averages_gradients_over_passes",
        "test_freelb_passes_share_the_first_passs_dropout_masks",
        "test_freelb_random_start_is_the_published_one", "test_embedding_ball_projects_and_masks",
    },
    "test_benchmark": {"test_methods_must_start_with_std_and_be_known", "test_the_hf_case_refuses_fp16"},
    "test_glue_recipes": {
        "test_hparams_match_papers_tables_5_and_6", "test_one_sentence_prediction_command_for_glue_and_xnli",
    },
    "test_hydra": {
        "test_there_is_a_config_for_every_glue_task_and_method_xnli_and_summarization_dataset",
        "test_glue_configs_hold_the_tables_values", "test_the_rte_configs_say_what_the_papers_tables_say",
        "test_xnli_configs_hold_the_tables_values", "test_summarization_configs_hold_the_tables_values",
        "test_the_configs_are_what_the_tables_give_now", "test_a_stale_config_is_named",
        "test_the_run_layer_labels_each_config_from_what_it_composes", "test_several_launched_processes_are_refused",
    },
    "test_install": {
        "test_installing_the_plugin_never_pulls_fairseq_or_torch", "test_ci_runs_the_readme_test_command",
        "test_run_logged_keeps_the_output_in_the_log_and_shows_only_its_tail_on_failure",
    },
    "test_option_checks": {"test_the_options_are_found"},
    "test_options_help": {
        "test_the_plugin_registers_its_components", "test_every_option_the_plugin_adds_has_help",
        "test_every_registered_name_prints_its_help_in_words",
        "test_the_probe_task_describes_itself_in_its_modules_words",
        "test_an_architecture_names_its_family_and_the_values_it_sets", "test_a_model_lists_its_architectures",
    },
    "test_packaging": {
        "test_the_version_is_written_once", "test_no_module_reaches_outside_the_package_through_its_own_path",
        "test_the_test_tiers_name_tests_that_exist",
    },
    "test_probing": {
        "test_best_metric_of_a_resumed_run_and_method_overrides", "test_figures_with_several_seeds_and_missing_points",
    },
    "test_runs": {"test_label_rules_for_the_other_methods"},
    "test_sentence_prediction_r3f": {"test_a_model_without_the_named_head_is_refused"},
    "test_translation": {"test_iwslt14_release_layout", "test_hypotheses_are_matched_by_sample_id"},
}
# Tests that run in-process but too long for the fast tier (20 to 30 s each here): two spawned ranks, and
# properties estimated over many noise samples.
LONG_TESTS = {
    # fairseq's parser builds a full cfg seven times (18 s on the oldest toolchain)
    "test_configuration": {"test_a_setting_given_after_the_method_is_part_of_the_configuration"},
    "test_distributed": {"test_two_ranks_reproduce_the_gradients_of_one_process"},
    # a fresh interpreter importing transformers, TRL and PEFT (10 to 18 s)
    "test_hf_noise": {"test_importing_the_adapter_does_not_import_fairseq"},
    # Trainer.train at three accumulation settings (and transformers' own Trainer beside it); the HF demo, shortened
    "test_hf_trainer_defects": {"test_gradient_accumulation_gives_the_same_update_for_classification"},
    "test_hf_demo": {"test_demo_prints_a_row_per_method"},
    "test_kl_properties": {
        "test_grows_quadratically_in_eps", "test_normal_noise_gives_three_times_the_kl_of_uniform_noise",
    },
}
# End-to-end tests that also run in CI's job on the oldest supported toolchain (official fairseq 0.12.2, torch
# 1.13, Python 3.10; `.ci/run`): one real run per family, selected there with -m "not slow or official".
OFFICIAL_TESTS = {
    "test_glue_recipes": {"test_tiny_runs_cover_methods_seeds_and_the_sweep",
                          "test_results_table_and_figure_from_the_runs",
                          "test_installed_with_its_declared_dependencies_into_fairseqs_environment_it_trains_cola_and_sts_b"},
    "test_xnli": {"test_tiny_run_and_table_3"},
    "test_summarization_pipeline": {"test_recipe_trains_with_r3f_then_generates_and_scores"},
    "test_translation": {"test_bleu_over_methods_and_seeds"},
    "test_hydra": {"test_glue_r3f_config_trains_with_r3f_under_fairseq_hydra_train",
                   "test_a_save_dir_in_use_is_refused_naming_the_holder"},
    "test_export": {"test_logits_of_the_export_in_plain_fairseq_equal_the_originals"},
}
# A test of the fast tier that takes longer than this is named at the end of the run, to be listed above.
FAST_TEST_BUDGET_S = 10.0


def is_slow(module: str, test: str) -> bool:
    if test in LONG_TESTS.get(module, ()):
        return True
    return module in END_TO_END_MODULES and test not in IN_PROCESS_TESTS.get(module, ())


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = os.path.splitext(os.path.basename(str(item.fspath)))[0]
        if is_slow(module, item.originalname):
            item.add_marker(pytest.mark.slow)
        if item.originalname in OFFICIAL_TESTS.get(module, ()):
            item.add_marker(pytest.mark.official)


_slow_unmarked = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > FAST_TEST_BUDGET_S and "slow" not in report.keywords:
        _slow_unmarked.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _slow_unmarked:
        terminalreporter.section("tests over the fast tier's budget, not marked slow")
        for nodeid, seconds in _slow_unmarked:
            terminalreporter.write_line(f"{nodeid}: {seconds:.1f} s > {FAST_TEST_BUDGET_S:.0f} s: list it in "
                                        f"END_TO_END_MODULES or LONG_TESTS in tests/conftest.py (or make it faster)")
