"""What every wa-watchdog process imports: the watchdog, bridges, monitors and the drops API.

Configuration (`config`, read by every child on start), sd_notify (`notify`), exit codes, the recovery
log, published endpoints, the log format, file modes and locks, schema migrations, the one wait helper,
the browser guard, the bounded HTTP runner, `[[programs]]` as data and what a product slice declares
(`component`). The supervision core (`watchdog/core/`) and the control side (`watchdog/control/`) build on
these; nothing here imports them, nor the product.
"""
