"""gunicorn settings and server hooks for ``vidax serve`` (``--config python:vidax_http.gunicorn_conf``).

Command-line flags win over these values. Runs execute in the worker that started them (the thread-pool
executor), so a worker must not be recycled while it runs jobs: ``max_requests`` stays 0.
"""

from __future__ import annotations

max_requests = 0
# A worker that is told to stop (SIGTERM, a reload) gets this long to finish requests; runs it was executing are
# found by their free run lock afterwards and marked RUN_INTERRUPTED, ready to be resumed.
graceful_timeout = 30
# the API key arrives in a header; gunicorn's access log format below names none
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'

# gunicorn >= 25.1 opens a control socket at one fixed path per user; several VIDAX servers on one machine
# would fight over it, and VIDAX needs none of its commands
control_socket_disable = True
