import { agentScenario } from "../helpers/agent_scenario.ts";

agentScenario("vxlan");
