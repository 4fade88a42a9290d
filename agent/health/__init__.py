"""Health checks, from one probe to the verdict every machine sees.

The pipeline, bottom up: :mod:`.httpprobe` (the HTTP check's own GET) and :mod:`.probes` (one run of
one TCP, HTTP(S), gRPC or exec check), :mod:`.execpolicy` (whether this machine lets an exec check
run), :mod:`.verdict` (results in, a rise/fall-thresholded state out, sans-I/O), and :mod:`.runner`
(runs every check assigned to this machine on its schedule and publishes the verdicts over gossip).
"""
