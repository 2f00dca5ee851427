"""Shared fixtures: a tiny offline tokenizer, tiny random models per family, and the real default model."""
import os

import pytest
import torch

import sysq

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (make test): one thread per worker, the cores shared between the workers, not oversubscribed
    torch.set_num_threads(1)



def pytest_collection_modifyitems(items):
    """`long(seconds)` tests first, longest first, the rest in their order: under `pytest -n 2` a minute-long test
    that starts last leaves one worker idle for that minute (the Triton interpreter tests sit in late files)."""
    def key(item):
        m = item.get_closest_marker("long")
        return -m.args[0] if m is not None else 0
    items.sort(key=key)


TINY_TEXT = ("The tower is 324 metres tall , about the same height as an 81 @-@ storey building . "
             "It was the first structure to reach a height of 300 metres ; in 1957 , an antenna was added .\n") * 8


def make_tokenizer():
    """A byte-level BPE trained on a few lines: offline, deterministic, with a BOS token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TINY_TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


def make_wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer over TINY_TEXT's words: [PAD]=0, [UNK], [CLS]=2, [SEP], [MASK]."""
    from transformers import BertTokenizerFast
    words = sorted(set(TINY_TEXT.lower().split()) | set("0123456789"))
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    return BertTokenizerFast(vocab=vocab)


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    return make_wordpiece_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M, loaded once per test session."""
    return sysq.load("smollm2-135m")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two that wait for each other (and for a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
