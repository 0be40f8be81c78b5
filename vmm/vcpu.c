/* vcpu: being written */
