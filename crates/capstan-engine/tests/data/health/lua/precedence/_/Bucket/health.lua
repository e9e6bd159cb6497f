return { status = "Healthy", message = "wildcard _/Bucket" }
