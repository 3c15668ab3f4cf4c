"""`cnnlab bench`: measured speed against the tutorials' loop and against the machine's own limit.

reference.py is the tutorials' loop, machine.py what the machine is and can do, suite.py the cases
and the interleaved measurement; cnnlab/commands/bench.py prints the table and appends the CSV.
"""
