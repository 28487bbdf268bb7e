"""Table 5: accuracy against encoder size (Trm++ 3.2M -> 1.2B dense parameters), with the saturating
power-law fit and the paper's curve beside ours.

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/scale_model_size/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
