"""`alarm-filter-py`: the per-customer alarm filter of `plugins/alarm-filter`,
in Python. Config: {"categories": [...], "reasons": [...]}, each optional; an
`alarm` is kept only if its category and reason are listed."""

import hookhost


def listed(config, key):
    values = config.get(key)
    if values is not None and not isinstance(values, list):
        raise TypeError(f"config: {key} must be a list of strings")
    return values


def keep(event, config):
    categories = listed(config, "categories")
    reasons = listed(config, "reasons")
    alarm = event.data
    return (categories is None or alarm.get("alarm_category") in categories) and (
        reasons is None or alarm.get("alarm_reason") in reasons
    )


Filter = hookhost.filter(keep, only=["alarm"])
