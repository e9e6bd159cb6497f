return { status = "Healthy", message = "wildcard _/_" }
