"""``python -m flyte_ctx_tracking sync ...``: the same as the ``flyte-ctx-tracking`` command."""

from ._sync import main

raise SystemExit(main())
