"""The `privtel` command line and demo: wiring only."""
