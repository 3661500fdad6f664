"""The README's import line gives working names, whatever was imported before."""

import importlib


def test_train_from_the_package_is_callable_and_forwards(monkeypatch):
    importlib.import_module("talklora_hub.train.trainer")  # binds `train` on the package to the subpackage
    from talklora_hub import train
    from talklora_hub.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append((a, k)) or "result")
    assert train("cfg", resume=True) == "result"
    assert calls == [(("cfg",), {"resume": True})]
    import talklora_hub.train.evaluate as evaluate  # the subpackage stays reachable by its full name

    assert evaluate.__name__ == "talklora_hub.train.evaluate"
