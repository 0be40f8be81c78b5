/* raw: being written */
