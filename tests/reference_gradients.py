"""The straightforward reference for the gradient engine: the HF model's own loss with `labels`, then backward."""

import torch


def plain_backward_gradients(model, tokenizer, examples, word, names, *, masked):
    """Gradients of the selected parameters from a plain `loss.backward()` of the HF model.

    Inputs are built with the target in place and only its position labelled: for a masked LM the slot is masked;
    a causal LM sees the prefix followed by the target token (HF shifts the labels itself). `word` is
    `"factual"` or `"counterfactual"`. The model's `requires_grad` flags and `.grad`s are left as they were.
    """
    rows, labels_at = [], []
    for example in examples:
        context = example.prefix.rstrip()
        # the target token: the last token of "context target" (single-token words)
        target_id = tokenizer(context + " " + getattr(example, word), add_special_tokens=False)["input_ids"][-1]
        if masked:
            ids = tokenizer(context + " " + tokenizer.mask_token + example.suffix)["input_ids"]
            labels_at.append((ids.index(tokenizer.mask_token_id), target_id))
        else:
            ids = tokenizer(context)["input_ids"] + [target_id]
            labels_at.append((len(ids) - 1, target_id))
        rows.append(ids)
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, (ids, (position, target_id)) in enumerate(zip(rows, labels_at)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, position] = target_id
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in names)
        p.grad = None
    try:
        model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.backward()
        return {n: params[n].grad.detach().clone() for n in names}
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])
            p.grad = None
