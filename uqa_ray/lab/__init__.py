"""The scaling lab: experiments (paper tables) run end to end on Ray, stage outputs reused by hash."""
