"""Store agents, server side: enrolment and tokens, the agent protocol, the Agents page."""
