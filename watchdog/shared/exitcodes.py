"""Exit codes shared by every wa-watchdog process; the watchdog reads them to decide what a child's exit means."""

EXIT_OK = 0
EXIT_ERROR = 1  # operational error (unknown project, unknown drop, ...)
EXIT_CONFIG = 2  # configuration error: restarting will not help, never loop on it
EXIT_SESSION_HELD = 3  # another live process owns this WhatsApp session
EXIT_NEEDS_OPERATOR = 4  # session not paired or logged out: a human must re-pair
