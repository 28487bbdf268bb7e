"""Table 2: the five encoders (GRU4Rec, SASRec, Mamba4Rec, HSTU, Trm++) against the Text20/Text50 baselines
and the controls.

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/compare_encoders/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
