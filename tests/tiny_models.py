"""Tiny random language models and tokenizers built in-process, so tests never touch the Hub."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CORPUS = [
    "Mary said that she would come home before he left.",
    "John explained the vision as best he could to everyone there.",
    "Anna smiled because she knew the answer to the question.",
    "Peter ran to the station, but he missed the train again.",
    "The doctor thinks she is right and he is wrong about it.",
    "Emma wrote a letter, and then she walked to the garden.",
    "James asked whether he could borrow the book for a day.",
    "They are Christian, Muslim or Jewish people from the town.",
    "The white and black cats sat on the old wall in the sun.",
] * 5


def bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 / Llama style: a word after a space carries the space)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def wordpiece_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer with [CLS] ... [SEP] and a [MASK] token."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_llama(vocab_size: int, seed: int = 0, *, tied: bool = False) -> LlamaForCausalLM:
    """A 2-layer Llama; `tied=True` ties the LM head to the input embedding, as Gemma does."""
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(vocab_size: int, seed: int = 0):
    """A 2-layer Gemma 3 text model; like the real one, its LM head is tied to its (scaled) input embedding."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, vocab_size=vocab_size, bos_token_id=1,
                              eos_token_id=2, pad_token_id=0, tie_word_embeddings=True, sliding_window=16)
    return Gemma3ForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=vocab_size, bos_token_id=1,
                        eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


def tiny_bert(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        vocab_size=vocab_size, max_position_embeddings=128, pad_token_id=0)
    return BertForMaskedLM(config).eval()


def tiny_gender_feature():
    """A small two-class feature whose targets (" she" / " he") are single tokens of `bpe_tokenizer()`."""
    from gradiend_hf.features import FeatureDataset

    names = {"female": ["Mary", "Anna", "Emma", "Sara", "Lucy", "Alice"],
             "male": ["John", "Peter", "James", "Tom", "Paul", "Mark"]}
    templates = [
        "[N] said that [MASK] would come home before dark.",
        "[N] explained the vision as best [MASK] could.",
        "[N] smiled because [MASK] knew the answer.",
        "[N] ran to the station, but [MASK] missed the train.",
        "When [N] came back, [MASK] asked for the book.",
    ]
    records = []
    for label, group in names.items():
        pronoun, other = ("she", "he") if label == "female" else ("he", "she")
        for i, name in enumerate(group):
            split = "train" if i < 4 else ("validation" if i == 4 else "test")
            for template in templates:
                records.append({"text": template.replace("[N]", name), "factual": pronoun, "counterfactual": other,
                                "label": label, "split": split})
    return FeatureDataset.from_records(records, name="gender", classes=("female", "male"))
