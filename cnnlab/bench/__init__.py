"""`cnnlab bench`: measured speed against the tutorials' loop and against the machine's own limit.

cases.py is the cases and the checks of their names (no torch), reference.py the tutorials' loop,
machine.py what the machine is and can do, suite.py the interleaved measurement;
cnnlab/commands/bench.py prints the table and appends the CSV.
"""
