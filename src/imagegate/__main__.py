from imagegate.cli import app

app(prog_name="imagegate")
