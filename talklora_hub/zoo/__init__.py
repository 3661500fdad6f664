"""The shipped zoo: recipes (one per entry), the entries' on-disk layout under the repository's zoo/ folder,
their retraining (scored on whole test splits by evaluation/scoring.py, against the baselines) and publishing
to a Hub.

    recipes.py   ZooRecipe and RECIPES: what each entry is and exactly how it is trained (read by
                 retraining and by the cards)
    shipped.py   zoo/<entry>/: bf16 adapter-only weights + talklora_expert.json + record.json
    retrain.py   `talklora-hub zoo retrain`: train, score and ship every entry (resumable)
    report.py    zoo/README.md: the entries' scores beside the baselines, paired differences, TT-LoRA MoE
    reproduce.py `talklora-hub zoo compare`: a retrained zoo beside the shipped one
(`talklora-hub zoo build`, which publishes the shipped entries to a Hub, is jobs/zoo_build.py.)
"""
