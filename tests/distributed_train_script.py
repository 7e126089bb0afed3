"""Trains a tiny GRADIEND under torchrun (or alone) and saves the final weights; used by test_training_distributed."""

import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tiny_models import tiny_gender_feature  # noqa: E402


def main(model_dir: str, out_file: str) -> None:
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"], feature=feature)
    args = TrainingArguments(max_steps=6, eval_steps=3, batch_size=4, learning_rate=1e-3, progress_bar=False)
    trainer = GradiendTrainer(model, base, tokenizer, feature, args)
    result = trainer.train()
    if trainer.state.is_main_process:
        tensors = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
        tensors["__processes__"] = torch.tensor([trainer.state.num_processes])
        tensors["__best_step__"] = torch.tensor([result.best_step])
        save_file(tensors, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
