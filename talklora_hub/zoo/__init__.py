"""The shipped zoo: recipes (one per entry), the entries' on-disk layout under the repository's zoo/ folder,
their scoring on whole test splits against the baselines, retraining, and publishing to a Hub.

    recipes.py   ZooRecipe and RECIPES: what each entry is and exactly how it is trained (read by
                 retraining and by the cards)
    shipped.py   zoo/<entry>/: bf16 adapter-only weights + talklora_expert.json + record.json
    scoring.py   the old import path of talklora_hub.evaluation.scoring (the benchmarks use it)
    retrain.py   `talklora-hub zoo retrain`: train, score and ship every entry (resumable)
    publish.py   `talklora-hub zoo build`: publish the shipped entries to a Hub, load one back, serve the Space
"""
