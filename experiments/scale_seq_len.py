"""Table 6: accuracy against the pretraining sequence length (32 -> 512 clicks), with the fit and the paper's curve.

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/scale_seq_len/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
