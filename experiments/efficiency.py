"""Table 7: prompt tokens against accuracy: Text20/Text50 histories against one (Mean-Pool) or 16 (Q-Former)
soft tokens.

Runs every stage on Ray (Data -> Train -> Tune), reusing finished stages, and writes one result record
per trial plus the fit, plot and paper-style table. Config presets: experiments/configs/efficiency/.
"""
from uqa_ray.lab.script import main

if __name__ == "__main__":
    raise SystemExit(main(__file__, __doc__))
