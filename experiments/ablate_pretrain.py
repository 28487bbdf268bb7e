"""Table 3: supervised next-item CE against contrastive InfoNCE, each with full input, without text and
without side information.

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/ablate_pretrain/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
