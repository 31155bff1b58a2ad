"""Tools: function tools, MCP servers, and the Toolbox that puts them in one name space."""
