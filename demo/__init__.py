"""The demo application: a shop of services behind sidecars, a load generator and a fault schedule.

`meshlens demo` (demo/cli.py) runs it; `demo.scenarios` runs repeatable, seeded fault scenarios and
writes their ground truth for the analytics evaluation.
"""
