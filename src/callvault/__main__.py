from callvault.cli import app

app(prog_name="callvault")
