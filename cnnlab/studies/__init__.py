"""Studies: compositions of training runs (cnnlab.runner.run_cells) whose results become one table,
a reading of it in plain words, and figures, in a study directory under runs/.

spec.py reads study files (configs/studies/*.yaml) and resolves members into configs; record.py
keeps a study directory's summary and files; compare.py and shift_sweep.py are the two studies.
Nothing here prints or imports typer: the commands in cnnlab/commands/studies.py do that.
"""
