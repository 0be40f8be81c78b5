/* rtc: being written */
