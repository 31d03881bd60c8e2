"""The autopilot: meets a latency objective at the least energy, live.

- objective.py: what to meet (`ttft_p90=2s,tpot_p90=80ms`, per stage or overall);
- params.py: every parameter of the method, and the user's bounds, in one place;
- measure.py: what one measurement epoch saw (J/token, latency quantiles, noise, load),
  from the event stream alone;
- policy.py: the decision rule, a pure function of the measurements (tested with
  scripted measurements);
- controller.py: the bus subscriber and task that measures, asks the policy, and acts
  only through the runner's knob path (`set_knob(..., source="autopilot")`).
"""
