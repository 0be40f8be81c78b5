/* drivers: being written */
