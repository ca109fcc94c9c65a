"""R4F on transformers models: apply_r4f normalises the classification head's matrices of a loaded model (sigma
<= 1, and it stays so through R3F training), fold_r4f gives a stock model with the same logits, an R4F checkpoint
that was not folded loads into the stock class with the R4F model's logits (the fold is stored under ``weight``),
and a Trainer checkpoint resumes to the parameters of an uninterrupted run."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rxf.hf import R3FTrainer, apply_r4f, fold_r4f, r3f_loss  # noqa: E402
from rxf.hf.r4f import R4FLinear, head_layer_names  # noqa: E402
from test_hf_noise import batch, fixed_noise, tiny  # noqa: E402
from test_hf_trainer import arguments, collate, examples  # noqa: E402

HEADS = {
    "roberta": ["classifier.dense", "classifier.out_proj"],
    "bart-classification": ["classification_head.dense", "classification_head.out_proj"],
    "bert": ["classifier"],
}


def largest_singular_value(layer) -> float:
    return torch.linalg.matrix_norm(layer.normalized_weight().detach().double(), ord=2).item()


def eval_logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


@pytest.mark.parametrize("family", list(HEADS))
def test_apply_r4f_normalises_every_head_matrix_of_the_loaded_model(family):
    model = tiny(family)
    loaded = {name: model.get_submodule(name).weight.detach().clone() for name in HEADS[family]}
    assert head_layer_names(model) == HEADS[family]
    assert apply_r4f(model) is model
    for name in HEADS[family]:
        layer = model.get_submodule(name)
        assert isinstance(layer, R4FLinear)
        assert torch.equal(layer.weight.detach(), loaded[name])  # the loaded matrix, not a new initialisation
        assert largest_singular_value(layer) == pytest.approx(1.0, abs=1e-4)  # u converged for it
    with pytest.raises(ValueError, match="apply_r4f once"):
        apply_r4f(model)


def test_a_model_without_a_classification_head_is_refused():
    with pytest.raises(ValueError, match="no classification head"):
        apply_r4f(tiny("gpt2"))


def test_the_head_stays_1_lipschitz_through_r3f_training(tmp_path):
    model = apply_r4f(tiny("roberta"))
    trainer = R3FTrainer(model=model, args=arguments(tmp_path, r3f_lambda=1.0, max_steps=5, learning_rate=0.05,
                                                     per_device_train_batch_size=4),
                         train_dataset=examples("roberta"), data_collator=collate)
    trainer.train()
    for name in HEADS["roberta"]:
        raw = torch.linalg.matrix_norm(model.get_submodule(name).weight.detach().double(), ord=2).item()
        assert raw != pytest.approx(1.0, abs=1e-3)  # the raw matrix is not normalised itself
        # one power-iteration step per forward: sigma's estimate lags the moving matrix by about one update
        assert largest_singular_value(model.get_submodule(name)) <= 1.0 + 1e-3


@pytest.mark.parametrize("family", list(HEADS))
def test_fold_r4f_gives_a_stock_model_with_the_same_logits(tmp_path, family):
    model = apply_r4f(tiny(family))
    inputs = batch(family)
    model.train()
    model(**inputs)  # a training forward moves u
    r4f_logits = eval_logits(model, inputs)
    assert fold_r4f(model) is model
    assert not any(isinstance(m, R4FLinear) for m in model.modules())
    assert torch.equal(eval_logits(model, inputs), r4f_logits)
    model.save_pretrained(tmp_path)
    stock, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    assert torch.equal(eval_logits(stock, inputs), r4f_logits)


@pytest.mark.parametrize("family", list(HEADS))
def test_an_unfolded_r4f_checkpoint_loads_into_the_stock_class_with_the_r4f_logits(tmp_path, family):
    model = apply_r4f(tiny(family))
    inputs = batch(family)
    model.train()
    model(**inputs)
    r4f_logits = eval_logits(model, inputs)
    model.save_pretrained(tmp_path)  # not folded
    stock, info = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(stock) is type(model)
    assert not info["missing_keys"]
    assert sorted(info["unexpected_keys"]) == sorted(f"{n}.{k}" for n in HEADS[family] for k in ("raw_weight", "u"))
    assert torch.allclose(eval_logits(stock, inputs), r4f_logits, rtol=0, atol=1e-6)
    # the R4F model's own state loads back exactly: the raw matrix, not its fold
    again = apply_r4f(tiny(family))
    again.load_state_dict(model.state_dict())
    for name in HEADS[family]:
        assert torch.equal(again.get_submodule(name).weight, model.get_submodule(name).weight)
        assert torch.equal(again.get_submodule(name).u, model.get_submodule(name).u)


def test_a_plain_checkpoint_loads_into_an_r4f_model_with_u_converged_for_its_matrices():
    plain = tiny("roberta")
    model = apply_r4f(tiny("roberta", initializer_range=0.1))  # other matrices before loading
    model.load_state_dict(plain.state_dict())
    for name in HEADS["roberta"]:
        assert torch.equal(model.get_submodule(name).weight, plain.get_submodule(name).weight)
        assert largest_singular_value(model.get_submodule(name)) == pytest.approx(1.0, abs=1e-4)


def test_a_trainer_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    def run(output_dir, max_steps, resume=None):
        model = apply_r4f(tiny("roberta"))
        args = arguments(output_dir, r3f_lambda=1.0, max_steps=max_steps, learning_rate=0.05, save_strategy="steps",
                         save_steps=2, per_device_train_batch_size=2)
        trainer = R3FTrainer(model=model, args=args, train_dataset=examples("roberta"), data_collator=collate)
        trainer.r3f_noise_sampler = fixed_noise(0.5)
        trainer.train(resume_from_checkpoint=resume)
        return model

    straight = run(tmp_path / "straight", 4)  # saves checkpoint-2 on the way
    resumed = run(tmp_path / "resumed", 4, resume=str(tmp_path / "straight" / "checkpoint-2"))
    for name, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-7), name
    for name in HEADS["roberta"]:
        assert not torch.equal(straight.get_submodule(name).u, apply_r4f(tiny("roberta")).get_submodule(name).u)


def test_r4f_under_peft_trains_the_saved_copy_of_the_head_and_folds_after_merging():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(apply_r4f(tiny("roberta")),
                                peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    trained = model.base_model.model.classifier.modules_to_save["default"]
    assert isinstance(trained.dense, R4FLinear) and isinstance(trained.out_proj, R4FLinear)
    inputs = batch("roberta")
    result = r3f_loss(model, inputs, r3f_lambda=1.0, eps=1e-5, noise_type="uniform", noise_sampler=fixed_noise(0.3))
    result.loss.backward()
    assert trained.dense.weight.grad is not None and trained.dense.weight.grad.abs().sum() > 0
    logits = eval_logits(model, inputs)
    merged = fold_r4f(model.merge_and_unload())
    assert type(merged.classifier.dense) is torch.nn.Linear
    assert torch.allclose(eval_logits(merged, inputs), logits, rtol=0, atol=1e-6)
