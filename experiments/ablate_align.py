"""Table 4: Mean-Pool against Q-Former adapters, each aligned adapter-only and with full fine-tuning (and LoRA).

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/ablate_align/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
