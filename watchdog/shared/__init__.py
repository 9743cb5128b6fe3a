"""What every wa-watchdog process imports: the watchdog, bridges, monitors and the drops API.

Configuration (`config`, read by every child on start), sd_notify (`notify`), exit codes, the recovery
log, published endpoints, the log format, file modes and locks, schema migrations, the one wait helper,
the browser guard, the bounded HTTP runner and `[[programs]]` as data. The supervision core (`watchdog/`)
and the console (`watchdog/control/console/`) build on these; nothing here imports them (but the config check
of `[[programs]]` names, which asks `watchdog.builtins` for the built-in ones).
"""
