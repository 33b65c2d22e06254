"""The monitor: is a new data snapshot still what the champion was trained on?

One module per job: :mod:`.snapshot` reads the new rows as data-prep does,
:mod:`.champion_reference` fetches the reference statistics registered with the champion,
:mod:`.drift` compares columns and labels (PSI, two-sample KS, total variation),
:mod:`.domain_classifier` compares whole rows (a classifier's cross-validated AUC),
:mod:`.figures` gathers the figures, :mod:`.policy` turns them into a retrain decision under
``monitor.retrain_when``, :mod:`.plots` and :mod:`.report` draw the HTML report. The stage is
:mod:`graft.stages.monitor`; docs/monitoring.md explains how to read it all.
"""
