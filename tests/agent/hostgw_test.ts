import { agentScenario } from "../helpers/agent_scenario.ts";

agentScenario("host-gw");
