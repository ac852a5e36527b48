"""MiniLM loads offline from its package; paraphrases embed closer than unrelated prompts; null prompt; cache."""
import os
import subprocess
import sys

import pytest
import torch

from ntm_core.text import TextEncoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(max_length=16)


def test_loads_with_the_hub_switched_off(tmp_path):
    code = "from ntm_core.text import TextEncoder; e = TextEncoder(); print(e.dim, e.encode('a red circle').pooled.shape)"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.getcwd(),
               HF_HOME=str(tmp_path))  # an empty hub cache: nothing to fall back on
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:1] == ["384"]


def test_paraphrases_closer_than_unrelated(encoder):
    e = encoder.encode(["a red circle", "one red circle", "a picture of a red circle",
                        "three blue triangles below a green square", "a handwritten digit seven"])
    p = e.pooled
    cos = p @ p.T
    for para in (1, 2):
        assert cos[0, para] > cos[0, 3] + 0.1 and cos[0, para] > cos[0, 4] + 0.1
    assert torch.allclose(p.norm(dim=1), torch.ones(5), atol=1e-5)


def test_null_prompt_and_padding(encoder):
    e = encoder.encode(["", "a red circle", "  a   red circle "])
    assert not e.mask[0].any() and torch.equal(e.pooled[0], torch.zeros(384))
    assert torch.equal(e.pooled[1], e.pooled[2]), "whitespace does not change a prompt"
    assert e.mask[1].sum() == e.mask[1].sum() and e.tokens.shape[0] == 3


def test_long_prompts_truncate_without_error(encoder):
    e = encoder.encode(["circle " * 2000])
    assert e.tokens.shape[1] == 16 and e.mask.all()


def test_cache_hits_and_eviction():
    enc = TextEncoder(cache_size=2)
    a1 = enc.encode("a red circle").pooled
    enc.encode(["a blue square", "a green triangle"])
    assert list(enc._cache) == ["a blue square", "a green triangle"], "least recently used is evicted first"
    assert torch.allclose(enc.encode("a red circle").pooled, a1)


def test_batch_order_preserved_with_cached_and_new(encoder):
    encoder.encode("a red circle")
    e = encoder.encode(["a blue square", "a red circle"])
    solo = encoder.encode("a blue square")
    assert torch.allclose(e.pooled[0], solo.pooled[0])


def test_cache_keys_on_what_the_encoder_reads():
    """A prompt longer than max_length tokens costs a short cache key (not its length), and prompts that differ
    only after the truncation point share one entry — and embed identically, so sharing is exact."""
    enc = TextEncoder(max_length=8)
    head = "a red circle to the left of a blue square"
    a = enc.encode(head + " and " + "green " * 200_000)  # ~1.2 MB of text
    b = enc.encode(head + " and " + "yellow " * 10)
    assert len(enc._cache) == 1 and len(next(iter(enc._cache))) < 100
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)
    c = enc.encode("a blue circle")
    assert len(enc._cache) == 2 and not torch.equal(c.pooled, a.pooled)


def test_concurrent_first_requests_share_one_encoder(monkeypatch):
    """The app's first requests arrive together (the example grid and a user's Generate): the encoder is built once
    and both get it."""
    import threading
    import time

    from ntm_core import text

    built = []

    class Slow:
        def __init__(self, path, max_length, device):
            built.append(path)
            time.sleep(0.3)  # loading takes time: the second request arrives meanwhile

    monkeypatch.setattr(text, "TextEncoder", Slow)
    text._shared_encoder.cache_clear()
    got = []
    threads = [threading.Thread(target=lambda: got.append(text.get_text_encoder("some/folder", 7))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text._shared_encoder.cache_clear()  # the fake must not serve later tests
    assert len(built) == 1 and len(got) == 4 and all(g is got[0] for g in got)
