"""HTTP handlers: thin RequestHandler subclasses that parse, call a service and render."""
