"""The house style of every self-contained HTML report (validation, downstream, evaluation)."""

BASE_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}.fail{background:#fde2e2}.warn{background:#fff4d6}
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}.hist{display:inline-block;margin:8px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}
"""
